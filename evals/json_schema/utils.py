"""lm-eval hooks for the json_schema suite; the code lives in workbench.evaluation.tasks."""

from workbench.evaluation.tasks import *  # noqa: F403
