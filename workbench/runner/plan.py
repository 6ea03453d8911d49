"""Plan a recipe: each stage's content hash and whether its output is cached, partial or missing."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from workbench.annotate.source import forget_pulls, is_argilla_uri, resolve_argilla_source
from workbench.recipe.loader import LoadedRecipe
from workbench.runner.hashing import data_digest, digest_json, digest_text, env_fingerprint
from workbench.runner.store import StageStore


@dataclass(frozen=True)
class PlannedStage:
    name: str
    kind: str
    hash: str
    inputs: dict[str, str]
    """Input stage name -> its hash."""
    status: str
    """'cached' (output exists), 'resume' (an interrupted run left checkpoints) or 'run'."""


@dataclass(frozen=True)
class Plan:
    stages: list[PlannedStage]
    tokenizer_hash: str
    chat_template: str
    store: StageStore

    def by_name(self) -> dict[str, PlannedStage]:
        return {stage.name: stage for stage in self.stages}


def recipe_store(loaded: LoadedRecipe) -> StageStore:
    return StageStore(work_root(loaded) / loaded.recipe.name)


def work_root(loaded: LoadedRecipe) -> Path:
    return loaded.resolve(loaded.recipe.work_dir)


def _source_digest(loaded: LoadedRecipe, reference: str) -> str:
    """A data reference's content hash; `argilla://` sources are pulled first, so new annotations re-run."""
    if is_argilla_uri(reference):
        return resolve_argilla_source(reference, work_root(loaded)).content_hash
    return data_digest(loaded.root, reference)


def tokenizer_spec_hash(loaded: LoadedRecipe, chat_template: str) -> str:
    """Hash of what determines the pinned tokenizer: its source (or training data and size) and template."""
    spec = loaded.recipe.tokenizer
    if spec.train is not None:
        source = {
            "vocab_size": spec.train.vocab_size,
            "files": {f: data_digest(loaded.root, f) for f in spec.train.files},
        }
    else:
        source = {"path": spec.path, "content": data_digest(loaded.root, spec.path)}
    return digest_json({"tokenizer": source, "chat_template": digest_text(chat_template), **env_fingerprint()})


def make_plan(loaded: LoadedRecipe) -> Plan:
    from workbench.modeling.chat_template import resolve_chat_template

    chat_template = resolve_chat_template(loaded.recipe.chat_template, loaded.root)
    tokenizer_hash = tokenizer_spec_hash(loaded, chat_template)
    store = recipe_store(loaded)
    hashes: dict[str, str] = {}
    planned = []
    forget_pulls()
    for name in loaded.order:
        config = loaded.stages[name]
        inputs = {dep: hashes[dep] for dep in loaded.dependencies(name)}
        files = {path: _source_digest(loaded, path) for _, path in config.data_files()}
        model = getattr(config, "model", None)
        if model is not None:
            files[f"model:{model}"] = data_digest(loaded.root, model)
        payload = {
            "kind": config.kind,
            "config": config.model_dump(mode="json", by_alias=True, exclude=set(config.unhashed_fields)),
            "inputs": inputs,
            "files": files,
            "tokenizer": tokenizer_hash,
            "recipe_seed": loaded.recipe.seed,
            "trust_remote_code": loaded.recipe.trust_remote_code,
            **env_fingerprint(),
        }
        stage_hash = digest_json(payload)
        hashes[name] = stage_hash
        if store.is_done(name, stage_hash):
            status = "cached"
        elif store.has_checkpoints(name, stage_hash):
            status = "resume"
        else:
            status = "run"
        planned.append(PlannedStage(name, config.kind, stage_hash, inputs, status))
    return Plan(planned, tokenizer_hash, chat_template, store)
