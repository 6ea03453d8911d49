"""Lineage in MLflow's own terms: the data files a stage reads as dataset inputs of its run, the model it writes as
an MLflow logged model (an output of its run), and the model a stage reads as an input, with an evaluate stage's
metrics linked to the model they measured. MLflow's UI then fills its Datasets and Models columns and the run and
model pages show where everything came from; a registered version points at its logged model.

With the local store a logged model references the stage's model folder (no second copy); with a tracking server
the folder is uploaded to it (`tracking.upload_models` decides).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from workbench.api.markers import DataPath
from workbench.recipe.loaded import LoadedRecipe

# Row counts are read for files up to this size (a line count); bigger ones are logged without it.
COUNT_ROWS_UP_TO = 200 * 2**20
MODEL_ID = "mlflow_model_id"
"""The key in stage.json that records the stage's logged model."""


def log_dataset_inputs(client, run_id: str, loaded: LoadedRecipe, stage: str, digests: dict[str, str]) -> None:
    """Every data file, folder or URI the stage reads, as an MLflow dataset input tagged with the field it fills."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    inputs = []
    for item in loaded.consumed(stage):
        if not isinstance(item.marker, DataPath):
            continue
        value = item.value
        digest = digests.get(item.marker.hash_prefix + value, "")
        remote = "://" in value
        local = None if remote else (loaded.root / value).resolve()
        profile = {} if local is None else _profile(local)
        dataset = Dataset(
            name=value.rsplit("/", 1)[-1] or value,
            digest=digest.split(":")[-1][:32],
            source_type=value.split("://", 1)[0] if remote else "local",
            source=json.dumps({"uri": value if remote else str(local)}),
            profile=json.dumps(profile) if profile else None,
        )
        field = ".".join(str(part) for part in item.path)
        inputs.append(DatasetInput(dataset, tags=[InputTag("mlflow.data.context", field)]))
    if inputs:
        client.log_inputs(run_id, datasets=inputs)


def _profile(path: Path) -> dict[str, Any]:
    if path.is_file() and path.stat().st_size <= COUNT_ROWS_UP_TO:
        if path.suffix == ".parquet":
            import pyarrow.parquet as parquet

            return {"num_rows": parquet.ParquetFile(path).metadata.num_rows}
        with path.open("rb") as handle:
            return {"num_rows": sum(1 for line in handle if line.strip())}
    return {}


def create_stage_model(client, experiment_id: str, run_id: str, stage: str, stage_hash: str, folder: Path) -> str:
    """A logged model for the model folder a stage is about to commit (PENDING until `finish_stage_model`)."""
    from workbench.tracking import model_name_safe

    model = client.create_logged_model(
        experiment_id,
        name=model_name_safe(stage),
        source_run_id=run_id,
        tags={"workbench.stage": stage, "workbench.stage_hash": stage_hash, "workbench.model_dir": str(folder)},
    )
    return model.model_id


def finish_stage_model(client, run_id: str, model_id: str, folder: Path, upload: bool) -> None:
    """Upload the folder when asked, mark the model READY and record it as the run's output."""
    from mlflow.entities import LoggedModelOutput

    if upload:
        client.log_model_artifacts(model_id, str(folder))
    client.finalize_logged_model(model_id, "READY")
    client.log_outputs(run_id, [LoggedModelOutput(model_id, 0)])


def input_model_id(config, inputs: dict[str, Any]) -> str | None:
    """The logged model of the stage this one reads its model from (`from:`), when that stage recorded one."""
    source = getattr(config, "from_", None)
    given = inputs.get(source) if source else None
    return given.info.get(MODEL_ID) if given is not None else None


def log_model_input(client, run_id: str, model_id: str) -> bool:
    """Record `model_id` as an input of the run; False when this store does not know it (another tracking store)."""
    from mlflow.entities import LoggedModelInput

    try:
        client.get_logged_model(model_id)
    except Exception:  # noqa: BLE001 (a model logged to another store)
        return False
    client.log_inputs(run_id, models=[LoggedModelInput(model_id)])
    return True


def log_model_output(client, run_id: str, model_id: str) -> bool:
    """Record an existing logged model as an output of the run (a cached stage's run shows the model its first run
    made); False when this store does not know it."""
    from mlflow.entities import LoggedModelOutput

    try:
        client.get_logged_model(model_id)
    except Exception:  # noqa: BLE001 (a model logged to another store)
        return False
    client.log_outputs(run_id, [LoggedModelOutput(model_id, 0)])
    return True
