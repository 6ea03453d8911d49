"""The MLflow model registry side of gates: register a gated model as `candidate`, promote it to `champion`."""

from __future__ import annotations

from workbench.errors import WorkbenchError, did_you_mean

CANDIDATE, CHAMPION = "candidate", "champion"


def find_version(client, name: str, tags: dict[str, str]) -> str | None:
    """The version of registered model `name` carrying all of `tags`, or None (also when there is no such model)."""
    from mlflow.exceptions import MlflowException

    query = " and ".join([f"name = '{name}'", *(f"tags.`{key}` = '{value}'" for key, value in tags.items())])
    try:
        found = client.search_model_versions(query)
    except MlflowException:
        return None
    return str(found[0].version) if found else None


def register_candidate(
    client, name: str, run_id: str, model_dir: str, tags: dict[str, str], model_id: str | None = None
) -> str:
    """A new version of registered model `name`, aliased `candidate`. When `model_id` is a logged model of this
    store that carries its folder (uploaded to a tracking server), the version is made from it and points back at
    its lineage; otherwise the folder is logged to the run (`model/`) and the version made from there."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="Models that passed a workbench evaluate stage's gates.")
    logged = _logged_model_with_files(client, model_id) if model_id else None
    if logged is not None:
        version = client.create_model_version(name, logged.artifact_location, run_id=run_id, tags=tags,
                                              model_id=logged.model_id)  # fmt: skip
    else:
        client.log_artifacts(run_id, model_dir, "model")
        source = f"{client.get_run(run_id).info.artifact_uri}/model"
        version = client.create_model_version(name, source, run_id=run_id, tags=tags)
    client.set_registered_model_alias(name, CANDIDATE, version.version)
    return str(version.version)


def _logged_model_with_files(client, model_id: str):
    """The logged model when this store knows it and holds its files, else None."""
    try:
        model = client.get_logged_model(model_id)
        return model if client.list_logged_model_artifacts(model_id) else None
    except Exception:  # noqa: BLE001 (another store's model, or a store without logged models)
        return None


def promote(client, name: str, version: str | None = None, source_alias: str = CANDIDATE) -> tuple[str, str | None]:
    """Point `champion` at `version` (default: the version aliased `source_alias`).

    Returns (new champion version, previous champion version or None). A missing model, version
    or alias is a one-line `WorkbenchError`.
    """
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        known = sorted(model.name for model in client.search_registered_models(max_results=100))
        listed = ", ".join(known) if known else "none yet"
        raise WorkbenchError(
            f"no registered model '{name}'{did_you_mean(name, known)} (registered models: {listed})"
        ) from None
    try:
        if version is None:
            version = str(client.get_model_version_by_alias(name, source_alias).version)
        else:
            client.get_model_version(name, version)
    except MlflowException:
        what = f"version {version}" if version else f"version aliased '{source_alias}'"
        raise WorkbenchError(f"registered model '{name}' has no {what}") from None
    try:
        previous = str(client.get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException:
        previous = None
    client.set_registered_model_alias(name, CHAMPION, version)
    client.set_model_version_tag(name, version, "workbench.previous_champion", previous or "none")
    return version, previous
