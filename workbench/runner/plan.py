"""Plan a recipe: each stage's content hash and whether its output is cached, partial or missing.

A stage's hash covers its config (less the fields that cannot change its output), the hashes of the stages whose
output it reads, the content of every file, model folder and named definition its markers point at, the pinned
tokenizer and the environment fingerprint.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from workbench.api.markers import DataPath, ModelPath, Named
from workbench.errors import WorkbenchError
from workbench.hashing import digest_json, digest_text, env_fingerprint, file_digest, model_identity
from workbench.recipe.loaded import LoadedRecipe
from workbench.runner.store import StageStore


@dataclass(frozen=True)
class PlannedStage:
    name: str
    kind: str
    hash: str
    inputs: dict[str, str]
    """Input stage name -> its hash (every stage it reads, hashed into it or not)."""
    status: str
    """'cached' (output exists), 'damaged' (output exists but its files changed), 'resume' (an interrupted run left
    checkpoints) or 'run'."""
    damage: list[str] = field(default_factory=list)
    """For 'damaged': how the files differ from the recorded manifest."""
    files: dict[str, str] = field(default_factory=dict)
    """Hash key -> content digest of every data file, model path and definition the stage reads (`consumed_digests`)."""
    info: dict | None = None
    """A finished stage's `stage.json`, as the plan read it to check its files: the run reads it here, not again."""


@dataclass(frozen=True)
class Plan:
    stages: list[PlannedStage]
    tokenizer_hash: str
    chat_template: str
    store: StageStore

    def by_name(self) -> dict[str, PlannedStage]:
        return {stage.name: stage for stage in self.stages}


def recipe_store(loaded: LoadedRecipe) -> StageStore:
    return StageStore(loaded.project.store_root)


def local_digest(loaded: LoadedRecipe, relative: str, what: str) -> str:
    """The content hash of a file or folder of the project; a missing one is an error, never a hash of its name."""
    local = loaded.root / relative
    if not local.exists():
        raise WorkbenchError(f"{loaded.path}: {what} '{relative}' not found (relative to {loaded.root})")
    return file_digest(local)


def tokenizer_spec_hash(loaded: LoadedRecipe, chat_template: str) -> str:
    """Hash of what determines the pinned tokenizer: its source (or training data and size) and template."""
    spec = loaded.recipe.tokenizer
    if spec.train is not None:
        source = {
            "vocab_size": spec.train.vocab_size,
            "files": {f: local_digest(loaded, f, "tokenizer training file") for f in spec.train.files},
        }
    else:
        source = {"path": spec.path, "content": model_identity(spec.path, loaded.root)}
    return digest_json({"tokenizer": source, "chat_template": digest_text(chat_template), **env_fingerprint()})


def resolve_chat_template(loaded: LoadedRecipe) -> str:
    from workbench.modeling.chat_template import resolve_chat_template as resolve

    try:
        return resolve(loaded.recipe.chat_template, loaded.root)
    except ValueError as error:
        raise WorkbenchError(f"{loaded.path}: chat_template: {error}") from None


def consumed_digests(loaded: LoadedRecipe, name: str) -> dict[str, str]:
    """Hash key -> content digest of everything stage `name` reads besides other stages."""
    files: dict[str, str] = {}
    for item in loaded.consumed(name):
        marker = item.marker
        if isinstance(marker, DataPath):
            scheme = item.value.split("://", 1)[0] if "://" in item.value else None
            if scheme is not None:
                files[marker.hash_prefix + item.value] = loaded.catalog.schemes[scheme].digest(
                    item.value, loaded.work_root
                )
            else:
                files[marker.hash_prefix + item.value] = local_digest(loaded, item.value, "file")
        elif isinstance(marker, ModelPath):
            files[marker.hash_prefix + item.value] = model_identity(item.value, loaded.root)
        elif isinstance(marker, Named):
            space = loaded.catalog.namespaces[marker.namespace]
            definition = space.definition(item.value, loaded.root) if space.definition else None
            if definition is not None:
                key, path = definition
                if not path.exists():
                    raise WorkbenchError(f"{loaded.path}: {space.name} '{item.value}': {path} not found")
                files[key] = file_digest(path)
    return files


def _hashed_resources(loaded: LoadedRecipe, name: str) -> dict:
    """What of the stage's resources changes its output (nothing for one full-precision process)."""
    hashed = loaded.resources(name).hashed()
    kind = loaded.catalog.kinds.get(loaded.stages[name].kind)
    if kind is not None and kind.same_on_any_world_size:
        hashed.pop("world_size", None)
    return hashed


def make_plan(loaded: LoadedRecipe) -> Plan:
    chat_template = resolve_chat_template(loaded)
    tokenizer_hash = tokenizer_spec_hash(loaded, chat_template)
    store = recipe_store(loaded)
    hashes: dict[str, str] = {}
    planned = []
    for scheme in loaded.catalog.schemes.values():
        if scheme.forget is not None:
            scheme.forget()
    for name in loaded.order:
        config = loaded.stages[name]
        hashed_inputs = {dep: hashes[dep] for dep in loaded.dependencies(name, hashed_only=True)}
        payload = {
            "kind": config.kind,
            "config": config.model_dump(mode="json", by_alias=True, exclude=config.hash_excluded()),
            "inputs": hashed_inputs,
            "files": (files := consumed_digests(loaded, name)),
            "tokenizer": tokenizer_hash,
            "recipe_seed": loaded.recipe.seed,
            "trust_remote_code": loaded.recipe.trust_remote_code,
            # only what changes the output, and nothing for one full-precision process (older hashes stand)
            **({"resources": hashed} if (hashed := _hashed_resources(loaded, name)) else {}),
            **env_fingerprint(),
        }
        stage_hash = digest_json(payload)
        hashes[name] = stage_hash
        info = store.read_info(name, stage_hash) if store.is_done(name, stage_hash) else None
        damage = store.damage(name, stage_hash, info=info) if info is not None else []
        if info is not None and not damage:
            status = "cached"
        elif damage:
            status = "damaged"  # its files changed after it finished: never handed downstream, it runs again
        elif store.has_checkpoints(name, stage_hash):
            status = "resume"
        else:
            status = "run"
        inputs = {dep: hashes[dep] for dep in loaded.dependencies(name)}
        planned.append(PlannedStage(name, config.kind, stage_hash, inputs, status, damage, files, info))
    return Plan(planned, tokenizer_hash, chat_template, store)


def finished_evaluations(
    loaded: LoadedRecipe, plan: Plan, known: dict[str, dict] | None = None
) -> dict[str, dict[str, float]]:
    """Metrics of every scoring stage (evaluate) of `plan` whose output exists, by stage name, in recipe order; `known` holds
    the `stage.json` of stages finished since the plan was made (a run's own)."""
    known = known or {}
    evaluations = {}
    for stage in plan.stages:
        info = known.get(stage.name, stage.info)
        kind = loaded.catalog.kinds.get(stage.kind)
        if kind is not None and kind.scores and info is not None:
            evaluations[stage.name] = info.get("metrics", {})
    return evaluations
