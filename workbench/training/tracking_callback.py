"""The Trainer's metrics into the stage's MLflow run, through the stage's tracker.

The Hugging Face `MLflowCallback` logs into mlflow's process-global active run with asynchronous calls whose
failures are only logged: a tracking server that goes away mid-stage would silently lose the rest of the curve.
Logging through `StageTracker` sends each point to the stage's run by its id and, while the server is away, keeps
it in the stage's outbox (`workbench.tracking_outbox`) to be sent later.
"""

from __future__ import annotations

import math
from numbers import Number

from transformers import TrainerCallback

from workbench.tracking import StageTracker, flatten


class TrackingCallback(TrainerCallback):
    """Trainer arguments as `trainer.*` params at the start; every `logs` dict's numbers as metrics at the global
    step. Only the main process logs (the others hold a `NullTracker` anyway)."""

    def __init__(self, tracker: StageTracker):
        self.tracker = tracker

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.tracker.log_params(flatten(args.to_sanitized_dict(), "trainer"))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        metrics = {
            key: float(value)
            for key, value in logs.items()
            if isinstance(value, Number) and not isinstance(value, bool) and math.isfinite(float(value))
        }
        if metrics:
            self.tracker.log_metrics(metrics, step=state.global_step)
