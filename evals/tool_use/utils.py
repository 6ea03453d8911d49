"""lm-eval hooks for the tool_use suite; the code lives in workbench.evaluation.tasks."""

from workbench.evaluation.tasks import *  # noqa: F403
