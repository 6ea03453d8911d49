"""Figures of a recipe run, logged on its parent run and saved beside the stage outputs: every training stage's
train and held-out loss on one step axis, and each suite's metrics across the evaluate stages."""

from __future__ import annotations

from pathlib import Path

from workbench.fsio import atomic_path
from workbench.runner.summary import RunSummary

# The training loop's TrackingCallback logs these every `logging_steps` (train) and at each evaluation (held out).
# A stage with a train-loss history is drawn whatever its kind, so a plug-in training kind is drawn too.
TRAIN_LOSS, EVAL_LOSS = "loss", "eval_loss"


def log_figures(client, run_id: str, summary: RunSummary, folder: Path) -> list[Path]:
    """Draw what the run has, log each figure to the parent run under `figures/` and save it in `folder`."""
    figures = {}
    losses = _loss_figure(client, summary)
    if losses is not None:
        figures["losses.png"] = losses
    scores = _suites_figure(summary)
    if scores is not None:
        figures["suites.png"] = scores
    saved = []
    for name, figure in figures.items():
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / name) as partial:
            figure.savefig(partial, format="png", dpi=110, bbox_inches="tight")
        client.log_artifact(run_id, str(folder / name), "figures")  # a file: kept while the server is away
        saved.append(folder / name)
        import matplotlib.pyplot as plt

        plt.close(figure)
    return saved


def _loss_figure(client, summary: RunSummary):
    curves = {}
    for stage in summary.kinds:
        if stage not in summary.runs:
            continue
        for metric in (TRAIN_LOSS, EVAL_LOSS):
            history = sorted(client.get_metric_history(summary.runs[stage], metric), key=lambda m: m.step)
            if not history:
                break  # no train loss: not a training stage (a merge's selection loss is not a curve)
            curves[(stage, metric)] = ([m.step for m in history], [m.value for m in history])
    if not curves:
        return None
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(8, 4.5))
    for (stage, metric), (steps, values) in curves.items():
        held_out = metric == EVAL_LOSS
        axis.plot(steps, values, marker="o" if held_out else None, linestyle="--" if held_out else "-",
                  label=f"{stage} {'held-out' if held_out else 'train'}")  # fmt: skip
    axis.set_xlabel("step (each stage's own)")
    axis.set_ylabel("loss")
    axis.set_title(f"{summary.recipe_name}: training losses")
    axis.legend(fontsize="small")
    axis.grid(alpha=0.3)
    return figure


def _suites_figure(summary: RunSummary):
    stages = [stage for stage, metrics in summary.metrics.items() if metrics]
    if not stages:
        return None
    suites = sorted({name.split("/")[0] for stage in stages for name in summary.metrics[stage]})
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(suites), figsize=(4.5 * len(suites), 4), squeeze=False)
    for axis, suite in zip(axes[0], suites, strict=True):
        names = sorted({n for stage in stages for n in summary.metrics[stage] if n.startswith(f"{suite}/")})
        width = 0.8 / len(stages)
        for offset, stage in enumerate(stages):
            values = [summary.metrics[stage].get(name, 0.0) for name in names]
            axis.bar([i + offset * width for i in range(len(names))], values, width, label=stage)
        axis.set_xticks([i + width * (len(stages) - 1) / 2 for i in range(len(names))])
        axis.set_xticklabels([n.split("/", 1)[1] for n in names], rotation=60, ha="right", fontsize="small")
        axis.set_title(suite)
        top = max((summary.metrics[s].get(n, 0.0) for s in stages for n in names), default=1.0)
        axis.set_ylim(0, max(1.0, top * 1.05))
    axes[0][0].legend(fontsize="small")
    figure.suptitle(f"{summary.recipe_name}: scores by evaluate stage")
    return figure


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    return plt
