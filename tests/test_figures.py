"""The run's loss figure draws every stage that logged a training loss, whatever its kind."""

from mlflow.tracking import MlflowClient

from workbench.runner.figures import _loss_figure
from workbench.runner.summary import RunSummary


def test_the_loss_figure_draws_any_stage_with_a_train_loss_and_nothing_else(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("figures", artifact_location=str(tmp_path / "artifacts"))
    summary = RunSummary(recipe_name="r", description="", hashes={})
    logged = {
        "plugin": ("my_trainer", {"loss": [3.0, 2.0, 1.5], "eval_loss": [2.5]}),  # a kind workbench does not ship
        "sft": ("sft", {"loss": [2.0, 1.0]}),
        "merged": ("merge", {"eval_loss": [1.2]}),  # a merge's selection loss: one number, not a training curve
        "eval_sft": ("evaluate", {"json_schema/valid_rate": [0.8]}),
    }
    for stage, (kind, metrics) in logged.items():
        run = client.create_run(experiment).info.run_id
        for metric, values in metrics.items():
            for step, value in enumerate(values):
                client.log_metric(run, metric, value, step=step)
        summary.stage_done(stage, kind, "ran", {"mlflow_run_id": run})
    figure = _loss_figure(client, summary)
    labels = sorted(line.get_label() for line in figure.axes[0].get_lines())
    assert labels == ["plugin held-out", "plugin train", "sft train"]
