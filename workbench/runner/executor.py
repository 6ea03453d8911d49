"""Run a recipe: stages in dependency order, cached stages skipped, each in its own MLflow child run."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path

import yaml
from filelock import FileLock, Timeout
from rich.console import Console
from rich.markup import escape

from workbench.api.context import ReviewContext, StageContext, StageInput
from workbench.api.sweeps import stage_of
from workbench.errors import StageError, StageHalted, WorkbenchError, did_you_mean, first_line
from workbench.fsio import write_json_atomic
from workbench.hashing import folder_manifest
from workbench.recipe.loaded import LoadedRecipe
from workbench.runner.disk import reported_disk_full
from workbench.runner.join import announce, new_session
from workbench.runner.launch import Cluster, run_distributed
from workbench.runner.lineage import (
    MODEL_ID,
    create_stage_model,
    finish_stage_model,
    input_model_id,
    log_dataset_inputs,
    log_model_input,
    log_model_output,
)
from workbench.runner.plan import Plan, PlannedStage, finished_evaluations, make_plan
from workbench.runner.summary import RunSummary, run_name, runs_table_url
from workbench.runner.tokenizer import ensure_tokenizer
from workbench.tracking_outbox import TrackingUnavailable, send_kept


@dataclass(frozen=True)
class StageOutcome:
    name: str
    status: str
    """'ran', 'resumed' or 'cached'."""
    dir: Path
    seconds: float
    info: dict
    """Its `stage.json` as recorded (JSON types): later stages of the run and the caller read it here, not again."""


def run_recipe(
    loaded: LoadedRecipe,
    force: set[str] = frozenset(),
    only: set[str] = frozenset(),
    console: Console | None = None,
    cluster: Cluster | None = None,
) -> list[StageOutcome]:
    """Execute the recipe; returns what happened to each selected stage. `cluster`: this machine's place when a
    stage runs on several (node 0 runs the recipe; the others `join_recipe`)."""
    from workbench.tracking import Tracker, check_reachable, default_tracking_uri, environment_tags

    console = console or Console(soft_wrap=True)
    cluster = cluster or Cluster()
    _check_names(loaded, force | only)
    force, only = loaded.expand(set(force)), loaded.expand(set(only))  # a swept stage: all its candidates
    plan = make_plan(loaded)
    selected = [s for s in plan.stages if not only or s.name in only]
    forced = loaded.descendants(set(force)) if force else set()
    _check_only_inputs(plan, selected, only)
    to_run = [s.name for s in selected if s.status != "cached" or s.name in forced]
    check_cluster(loaded, to_run, cluster)
    multi_node = cluster.nnodes > 1 and any(loaded.resources(name).nodes > 1 for name in to_run)
    if multi_node:
        cluster = replace(cluster, session=new_session())

    recipe = loaded.recipe
    root = loaded.work_root
    with _exclusive(plan.store.root):
        uri = default_tracking_uri(recipe.tracking.uri, root)
        sqlite_default = uri.startswith("sqlite:///") and not recipe.tracking.uri
        check_reachable(uri)
        tracker = Tracker(
            uri,
            recipe.tracking.experiment or recipe.name,
            root / "mlartifacts" if sqlite_default else None,
            plan.store.root,
            on_queue=lambda message: console.print(f"[yellow]{escape(message)}[/]", highlight=False),
        )
        # before reaping: what was kept may end those runs properly
        send_kept(tracker.client.client, plan.store.root, lambda line: console.print(line, markup=False))
        for run_id in tracker.reap_dead_runs():
            console.print(f"[yellow]marked MLflow run {run_id} KILLED: its process is gone[/]")
        tags = {"workbench.recipe": recipe.name, "workbench.recipe_file": str(loaded.path)}
        tags |= environment_tags(loaded.root)
        summary = RunSummary(recipe.name, recipe.description, {s.name: s.hash for s in plan.stages})
        parent = tracker.start_parent(run_name(recipe.name, plan, summary.started), tags)
        parent.log_text(loaded.path.read_text(encoding="utf-8"), "recipe/recipe.yaml")
        parent.log_text(yaml.safe_dump(_resolved(loaded, plan), sort_keys=False), "recipe/resolved.yaml")
        console.print(f"MLflow run {parent.run_id} at {uri}")
        if uri.startswith(("http://", "https://")):
            console.print(f"runs table: {runs_table_url(uri, tracker.experiment_id)}")
        status, outcomes = "FAILED", []
        if multi_node:
            announce(plan.store.root, cluster.session, "running")
        try:
            tokenizer_dir = ensure_tokenizer(
                loaded, plan.store.root, plan.tokenizer_hash, plan.chat_template,
                warn=lambda line: console.print(f"[yellow]{escape(line)}[/]", highlight=False),
            )  # fmt: skip
            pinned = cache(lambda: _fingerprint(tokenizer_dir))  # hashed once per run, and only if a stage runs
            for stage in selected:
                inputs = _inputs(plan, stage, {o.name: o.info for o in outcomes})
                if stage.status == "cached" and stage.name not in forced:
                    outcome, halt = _log_cached(loaded, tracker, plan, stage, inputs, tags, console, summary)
                else:
                    if stage.status == "damaged":
                        console.print(
                            f"[red]{stage.name}[/]: output changed after it finished ({'; '.join(stage.damage)})"
                        )
                    fresh = stage.name in forced or stage.status == "damaged"
                    outcome, halt = _execute(
                        loaded,
                        tracker,
                        plan,
                        stage,
                        inputs,
                        tags,
                        tokenizer_dir,
                        pinned,
                        fresh,
                        console,
                        cluster,
                        summary,
                    )
                outcomes.append(outcome)
                if halt:
                    raise StageHalted(halt, finished_evaluations(loaded, plan, {o.name: o.info for o in outcomes}))
            status = "FINISHED"
        except KeyboardInterrupt:
            status = "KILLED"
            summary.failure = "interrupted"
            raise
        except BaseException as error:
            summary.failure = str(error) if isinstance(error, WorkbenchError) else f"{type(error).__name__}: {error}"
            raise
        finally:
            if multi_node:
                announce(plan.store.root, cluster.session, status.lower())
            summary.status = status
            _log_summary(summary, tracker, parent.run_id, plan, console)
            tracker.end_parent(status)
            if tracker.client.queued:
                console.print(
                    f"[yellow]{tracker.client.queued} tracking calls are kept under {plan.store.root} "
                    f"(tracking-outbox/): `workbench sync {loaded.path}` sends them once the server is back "
                    "(the next `workbench run` does too)[/]",
                    highlight=False,
                )
    return outcomes


def _log_summary(summary: RunSummary, tracker, run_id: str, plan: Plan, console: Console) -> None:
    """The run's summary and figures onto its parent run; a tracking failure here is reported, not raised over
    the run's own outcome."""
    from workbench.runner.figures import log_figures

    try:
        summary.log(tracker.client, run_id)  # kept in the outbox when the server is away
        saved = log_figures(tracker.client, run_id, summary, plan.store.root / "_figures" / run_id)
        if saved:
            console.print(f"figures: {', '.join(str(path) for path in saved)}")
    except Exception as error:  # noqa: BLE001 (the run's own error, if any, is what the user must see)
        console.print(f"[yellow]could not write the run summary to MLflow: {first_line(error)}[/]")


def _record_inputs(tracker, run, loaded: LoadedRecipe, stage: PlannedStage, inputs: dict[str, StageInput]):
    """The stage's data files as dataset inputs of its run and the model it reads as a model input; returns that
    model's id (what an evaluate stage's metrics measured), or None."""
    log_dataset_inputs(tracker.client, run.run_id, loaded, stage.name, stage.files)
    model_id = input_model_id(loaded.stages[stage.name], inputs)
    if model_id is not None and log_model_input(tracker.client, run.run_id, model_id):
        return model_id
    return None


def _uploads(loaded: LoadedRecipe, tracker) -> bool:
    """Whether logged models carry their folder: the recipe's choice, else only towards a tracking server."""
    chosen = loaded.recipe.tracking.upload_models
    return chosen if chosen is not None else tracker.uri.startswith(("http://", "https://"))


def check_cluster(loaded: LoadedRecipe, stages: list[str], cluster: Cluster) -> None:
    """A stage on several machines needs `workbench run` started on each of them with the same node count."""
    for name in stages:
        nodes = loaded.resources(name).nodes
        if nodes > 1 and cluster.nnodes != nodes:
            raise WorkbenchError(
                f"stage '{name}' runs on {nodes} nodes: start `workbench run {loaded.path} --nnodes {nodes} "
                f"--node-rank R --master-addr HOST` on each node (R = 0 on this one), or under Slurm's srun"
            )


def _check_names(loaded: LoadedRecipe, names: set[str]) -> None:
    unknown = sorted(names - set(loaded.stages) - set(loaded.sweeps))
    if unknown:
        hint = did_you_mean(unknown[0], [*loaded.stages, *loaded.sweeps])
        raise WorkbenchError(f"{loaded.path}: no stage named {', '.join(repr(n) for n in unknown)}{hint}")


def _check_only_inputs(plan: Plan, selected: list[PlannedStage], only: set[str]) -> None:
    statuses = {s.name: s.status for s in plan.stages}
    for stage in selected:
        missing = [dep for dep in stage.inputs if dep not in only and statuses[dep] != "cached"]
        if only and missing:
            raise WorkbenchError(
                f"--only {stage.name}: input stage '{missing[0]}' has no finished output for its current hash; "
                f"run it first (or add --only {missing[0]})"
            )


@contextmanager
def _exclusive(store_root: Path) -> Iterator[None]:
    """One `workbench run` per recipe at a time: two would write the same stage folders."""
    store_root.mkdir(parents=True, exist_ok=True)
    lock = FileLock(store_root / ".lock", timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise WorkbenchError(f"another workbench run is using {store_root}; wait for it to finish") from None
    try:
        yield
    finally:
        lock.release()


def _resolved(loaded: LoadedRecipe, plan: Plan) -> dict:
    recipe = loaded.recipe.model_dump(mode="json", exclude={"stages"})
    hashes = plan.by_name()
    recipe["stages"] = [
        loaded.stages[name].model_dump(mode="json", by_alias=True)
        | {"hash": hashes[name].hash}
        | ({"candidate": name} if stage_of(name) != name else {})
        for name in loaded.order
    ]
    return recipe


def _stage_tags(stage: PlannedStage, tags: dict[str, str]) -> dict[str, str]:
    own = {"workbench.stage": stage.name, "workbench.kind": stage.kind, "workbench.stage_hash": stage.hash}
    if stage_of(stage.name) != stage.name:
        own["workbench.candidate_of"] = stage_of(stage.name)
    return tags | own


def _inputs(plan: Plan, stage: PlannedStage, done: dict[str, dict]) -> dict[str, StageInput]:
    """The stage's input stages; `done` holds the `stage.json` of the stages this run has finished or logged as
    cached already, the plan that of the others finished before (`--only`), neither read again."""
    planned = plan.by_name()
    return {
        dep: StageInput(dep, plan.store.final_dir(dep, h), done[dep] if dep in done else planned[dep].info)
        for dep, h in stage.inputs.items()
    }


def _fingerprint(tokenizer_dir: Path) -> str:
    from workbench.modeling.tokenizer import tokenizer_fingerprint

    return tokenizer_fingerprint(tokenizer_dir)


def _as_recorded(info: dict) -> dict:
    """`info` as `stage.json` holds it (JSON types, sorted keys), as a cached stage's review sees it: not read back."""
    return json.loads(json.dumps(info, sort_keys=True, default=str))


def _review(
    loaded,
    plan: Plan,
    stage: PlannedStage,
    run,
    console: Console,
    info: dict,
    inputs: dict[str, StageInput],
    summary: RunSummary | None = None,
) -> str | None:
    """The kind's verdict on the recorded output (gates), for fresh and cached stages alike; returns a halt reason.

    `info` is the stage's `stage.json` and `inputs` its input stages, as the caller holds them (never read here)."""
    kind = loaded.catalog.kinds[stage.kind]
    if kind.review is None:
        return None
    final = plan.store.final_dir(stage.name, stage.hash)
    review = kind.review(
        ReviewContext(
            config=loaded.stages[stage.name],
            info=info,
            inputs=inputs,
            project=loaded.project,
            tracker=run,
            console=console,
            dir=final,
        )
    )
    if review.details:
        run.log_dict(review.details, "review.json")
        if summary is not None:
            summary.reviewed(stage.name, review.details)
    if review.report and not review.halt:
        console.print(review.report, highlight=False, markup=False)
    return review.halt


def _log_cached(
    loaded,
    tracker,
    plan: Plan,
    stage: PlannedStage,
    inputs: dict[str, StageInput],
    tags: dict,
    console: Console,
    summary: RunSummary,
):
    from workbench.tracking import flatten

    info = stage.info  # as the plan read it
    cached_tags = {"workbench.cached": "true", "workbench.source_run_id": str(info.get("mlflow_run_id"))}
    with tracker.stage_run(stage.name, _stage_tags(stage, tags) | cached_tags, stage_of(stage.name)) as run:
        run.log_params(flatten(info.get("config", {}), "stage"))
        kind = loaded.catalog.kinds[stage.kind]
        measured = _record_inputs(tracker, run, loaded, stage, inputs)
        if info.get(MODEL_ID):
            log_model_output(tracker.client, run.run_id, info[MODEL_ID])  # the model its first run logged
        run.log_metrics(info.get("metrics", {}), model_id=None if kind.makes_model else measured)
        run.log_dict(info, "stage.json")
        console.print(f"[green]✓[/] {stage.name} ({stage.kind}) cached [dim]{stage.hash[:12]}[/]")
        # a halt the stage asked for when it ran holds for its cached output too
        summary.stage_done(stage.name, stage.kind, "cached", info, scores=kind.scores)
        halt = info.get("halt") or _review(loaded, plan, stage, run, console, info, inputs, summary)
    outcome = StageOutcome(stage.name, "cached", plan.store.final_dir(stage.name, stage.hash), 0.0, info)
    return outcome, halt


def _execute(
    loaded,
    tracker,
    plan: Plan,
    stage: PlannedStage,
    inputs: dict[str, StageInput],
    tags,
    tokenizer_dir,
    pinned: Callable[[], str],
    fresh,
    console,
    cluster: Cluster,
    summary: RunSummary,
):
    """Run one stage; `pinned()` is the pinned tokenizer's fingerprint, hashed once per run."""
    from workbench.tracking import flatten

    config = loaded.stages[stage.name]
    fingerprint = pinned()
    for dep, given in inputs.items():
        if given.info.get("tokenizer_fingerprint") not in (None, fingerprint):
            raise StageError(
                f"stage '{stage.name}': input '{dep}' was made with a different tokenizer than the recipe pins"
            )
    resuming = not fresh and stage.status == "resume"
    tmp = plan.store.prepare(stage.name, stage.hash, fresh=fresh)
    verb = "resuming" if resuming else "running"
    console.print(f"[cyan]▶[/] {stage.name} ({stage.kind}) {verb} [dim]{stage.hash[:12]}[/]")
    started = time.time()
    resumed = {"workbench.resumed": str(resuming).lower()}
    with tracker.stage_run(stage.name, _stage_tags(stage, tags) | resumed, stage_of(stage.name)) as run:
        run.log_params(flatten(config.model_dump(mode="json", by_alias=True), "stage"))
        measured = _record_inputs(tracker, run, loaded, stage, inputs)
        resources = loaded.resources(stage.name)
        ctx = StageContext(
            loaded.project,
            config,
            stage.hash,
            tmp,
            inputs,
            tokenizer_dir,
            run,
            console,
            resources=resources,
            tokenizer_fingerprint=fingerprint,
        )
        disk_full = reported_disk_full(tmp, [given.dir / "model" for given in inputs.values()])
        with disk_full:
            if resources.distributed:
                port = cluster.master_port + loaded.order.index(stage.name)  # the same on every node
                result = run_distributed(ctx, run.run_id, tracker.uri, cluster, port)
            else:
                result = loaded.catalog.kinds[stage.kind].run(ctx)
        info = {
            "name": stage.name,
            "kind": stage.kind,
            "hash": stage.hash,
            "inputs": stage.inputs,
            "config": config.model_dump(mode="json", by_alias=True),
            "metrics": result.metrics,
            "details": result.details,
            "mlflow_run_id": run.run_id,
            "tokenizer_fingerprint": fingerprint,
            "started": started,
            "seconds": round(time.time() - started, 3),
            "resumed": resuming,
            "pid": os.getpid(),
            "halt": result.halt,
            # size, mtime and sha256 of every file: plan notices a damaged output, `workbench verify` checks bytes
            "outputs": folder_manifest(tmp, skip=("stage.json", "checkpoints")),
        }
        kind = loaded.catalog.kinds[stage.kind]
        final_model = plan.store.final_dir(stage.name, stage.hash) / "model"
        if kind.makes_model and (tmp / "model").is_dir():
            try:
                info[MODEL_ID] = create_stage_model(
                    tracker.client, tracker.experiment_id, run.run_id, stage.name, stage.hash, final_model
                )
            except TrackingUnavailable:  # the stage's output matters more than its logged-model entry
                console.print(f"[yellow]{stage.name}: no MLflow logged model (the tracking server is away)[/]")
        with disk_full:
            write_json_atomic(tmp / "stage.json", info)
        run.log_metrics(result.metrics, model_id=None if kind.makes_model else measured)
        run.log_dict(info, "stage.json")
        with disk_full:
            final = plan.store.commit(stage.name, stage.hash)
        if MODEL_ID in info:
            finish_stage_model(tracker.client, run.run_id, info[MODEL_ID], final_model, _uploads(loaded, tracker))
        console.print(f"[green]✓[/] {stage.name} done in {info['seconds']:.1f}s → {final}")
        recorded = _as_recorded(info)
        summary.stage_done(stage.name, stage.kind, "resumed" if resuming else "ran", recorded, scores=kind.scores)
        halt = result.halt or _review(loaded, plan, stage, run, console, recorded, inputs, summary)
    outcome = StageOutcome(stage.name, "resumed" if resuming else "ran", final, info["seconds"], recorded)
    return outcome, halt
