"""lm-eval hooks for the instruction_following suite; the code lives in workbench.evaluation.tasks."""

from workbench.evaluation.tasks import *  # noqa: F403
