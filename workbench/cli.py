"""The `workbench` command line."""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
import sys
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from workbench.errors import RecipeError, StageHalted, WorkbenchError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Declarative post-training for small language models.",
)
# soft_wrap: long paths and messages are never broken at the terminal's width
console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)
_options = {"debug": False}

RecipeArg = Annotated[Path, typer.Argument(help="Recipe YAML file.", show_default=False)]


@app.callback()
def _global(debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False) -> None:
    """Declarative post-training for small language models."""
    _options["debug"] = debug


def _close_progress_bars() -> None:
    """A stage stopped by an error leaves its progress bar open mid-line; closed first, the error gets a line of
    its own (and nothing redraws a bar after it at exit)."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def _fail(error: Exception) -> None:
    _close_progress_bars()
    lines = [str(p) for p in error.problems] if isinstance(error, RecipeError) else [str(error)]
    for line in lines:
        errors.print("[red]error:[/] " + escape(line), highlight=False)
    raise typer.Exit(code=1)


def handled(command: Callable) -> Callable:
    """Every command reports through here: a WorkbenchError is its message, any other exception one line naming
    it (the traceback only with --debug), Ctrl-C a note that finished stages are kept."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except WorkbenchError as error:
            if _options["debug"]:
                traceback.print_exc()
            _fail(error)
        except KeyboardInterrupt:
            _close_progress_bars()
            errors.print("[red]interrupted[/]: finished stages are kept; the next run resumes the interrupted one")
            raise typer.Exit(code=130) from None
        except Exception as error:  # noqa: BLE001 (the one place that turns a bug into one line)
            if _options["debug"]:
                traceback.print_exc()
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            _close_progress_bars()
            errors.print(
                "[red]error:[/] "
                + escape(f"{type(error).__name__}: {first}")
                + " (run with --debug for the traceback)",
                highlight=False,
            )
            raise typer.Exit(code=1) from None

    return wrapper


def _load(recipe: Path):
    from workbench.runner import load_recipe

    return load_recipe(recipe)


@app.command()
@handled
def validate(recipe: RecipeArg) -> None:
    """Check a recipe and report every problem at once (exit 1 if any)."""
    loaded = _load(recipe)
    order = loaded.written_order
    console.print(f"OK: {recipe} ({len(order)} stages: {' -> '.join(order)})")
    _print_sweeps(loaded)


def _print_sweeps(loaded) -> None:
    """One line per swept stage: its swept fields and its candidates' names (what `from:` may name)."""
    for name, sweep in loaded.sweeps.items():
        console.print(
            f"{name}: {len(sweep.candidates)} candidates over {', '.join(sweep.fields)}: {', '.join(sweep.candidates)}",
            markup=False,
            highlight=False,
        )


def _inputs_text(loaded, inputs: list[str]) -> str:
    """A stage's inputs, the candidates of a swept stage that it reads all of as `sft (3 candidates)`."""
    shown = list(inputs)
    for name, sweep in loaded.sweeps.items():
        if len(sweep.candidates) > 1 and set(sweep.candidates) <= set(shown):
            at = shown.index(sweep.candidates[0])
            shown = [item for item in shown if item not in sweep.candidates]
            shown.insert(at, f"{name} ({len(sweep.candidates)} candidates)")
    return ", ".join(shown)


@app.command()
@handled
def plan(recipe: RecipeArg) -> None:
    """Show the stage graph and what is cached, resumable or will run."""
    from workbench.runner.plan import make_plan

    loaded = _load(recipe)
    the_plan = make_plan(loaded)
    table = Table(title=f"{loaded.recipe.name} ({recipe})")
    # names and hashes whole (candidates differ only at their end: `sft@learning_rate=0.001`); the rest wraps
    longest = max((len(stage.name) for stage in the_plan.stages), default=5)
    table.add_column("stage", no_wrap=True, min_width=longest)
    table.add_column("kind", no_wrap=True)
    table.add_column("inputs")
    table.add_column("hash", no_wrap=True, min_width=12)
    table.add_column("status")
    colors = {"cached": "green", "damaged": "red", "resume": "yellow", "run": "cyan"}
    labels = {"cached": "cached", "damaged": "will run again", "resume": "resume from checkpoint", "run": "will run"}
    for stage in the_plan.stages:
        inputs = _inputs_text(loaded, list(stage.inputs)) or getattr(loaded.stages[stage.name], "model", None) or "-"
        label = f"[{colors[stage.status]}]{labels[stage.status]}[/]"
        table.add_row(escape(stage.name), stage.kind, escape(inputs), stage.hash[:12], label)
    console.print(table)
    _print_sweeps(loaded)
    for stage in the_plan.stages:
        if stage.damage:
            console.print(f"[red]{stage.name}[/]: its output changed after it finished: {'; '.join(stage.damage)}")
    console.print(f"outputs under {the_plan.store.root}")


@app.command()
@handled
def path(
    recipe: RecipeArg,
    stage: Annotated[str, typer.Argument(help="A stage of the recipe (a swept stage's candidate by its name).")],
) -> None:
    """Print the output folder of a finished stage for the recipe as it is now (exit 1 if it has not finished).

    Folders are named by content hash and older ones stay, so a glob can pick a stale one: use
    `$(workbench path recipes/quickstart.yaml device)/gguf/model-q8_0.gguf` instead.
    """
    from workbench.api.sweeps import CANDIDATE_MARK, spelled_as_candidate
    from workbench.errors import did_you_mean
    from workbench.runner.plan import make_plan

    the_plan = make_plan(_load(recipe))
    planned = the_plan.by_name()
    written, stage = stage, stage if stage in planned else spelled_as_candidate(stage)  # `lr=1e-3` is `lr=0.001`
    if stage not in planned:
        swept = [name for name in planned if name.startswith(f"{stage}{CANDIDATE_MARK}")]
        hint = (
            f": it is swept, name one of its candidates ({', '.join(swept)})" if swept else did_you_mean(stage, planned)
        )
        raise WorkbenchError(f"{recipe}: no stage '{written}'{hint}")
    found = planned[stage]
    if found.status != "cached":
        why = {"damaged": "its files changed after it finished", "resume": "it was interrupted"}.get(
            found.status, "it has not run with the recipe's current inputs"
        )
        raise WorkbenchError(f"stage '{stage}' has no finished output ({why}): run `workbench run {recipe}` first")
    typer.echo(the_plan.store.final_dir(stage, found.hash))  # plain: a long path is never wrapped


@app.command()
@handled
def verify(recipe: RecipeArg) -> None:
    """Check every finished stage's files against the sha256 recorded when it finished (exit 1 if any changed)."""
    from workbench.runner.plan import make_plan

    loaded = _load(recipe)
    the_plan = make_plan(loaded)
    damaged = 0
    for stage in the_plan.stages:
        info = stage.info
        if info is None:
            console.print(f"{stage.name}: not finished")
            continue
        problems = the_plan.store.damage(stage.name, stage.hash, full=True, info=info)
        if problems:
            damaged += 1
            console.print(f"[red]{stage.name}: damaged[/]: {'; '.join(problems)}")
        elif "outputs" not in info:
            console.print(f"{stage.name}: no recorded checksums (finished by an older workbench)")
        else:
            console.print(f"[green]{stage.name}: intact[/] ({len(info['outputs'])} files)")
    if damaged:
        raise WorkbenchError(f"{damaged} stage(s) changed after they finished; `workbench run` runs them again")


@app.command()
@handled
def sync(recipe: RecipeArg) -> None:
    """Send the tracking calls a run kept while its MLflow server was away (`workbench run` does this first too)."""
    from mlflow.tracking import MlflowClient

    from workbench.tracking import check_reachable, default_tracking_uri
    from workbench.tracking_outbox import outboxes, pending, send_kept

    loaded = _load(recipe)
    store_root = loaded.project.store_root
    if not pending(outboxes(store_root)):
        console.print("nothing to send: no tracking calls are kept")
        return
    uri = default_tracking_uri(loaded.recipe.tracking.uri, loaded.work_root)
    check_reachable(uri)
    send_kept(MlflowClient(uri), store_root, lambda line: console.print(line, markup=False))


@app.command()
@handled
def run(
    recipe: RecipeArg,
    force: Annotated[
        list[str] | None, typer.Option("--force", help="Re-run this stage (and what depends on it) even if cached.")
    ] = None,
    only: Annotated[
        list[str] | None, typer.Option("--only", help="Run only this stage; its inputs must be finished.")
    ] = None,
    nnodes: Annotated[
        int | None, typer.Option("--nnodes", min=1, help="Machines this run spans (stages with resources.nodes > 1).")
    ] = None,
    node_rank: Annotated[
        int, typer.Option("--node-rank", min=0, help="This machine's rank: 0 runs the recipe, others join its stages.")
    ] = 0,
    master_addr: Annotated[
        str, typer.Option("--master-addr", help="Host name or address of node 0, which every node can reach.")
    ] = "127.0.0.1",
    master_port: Annotated[
        int, typer.Option("--master-port", help="First port of node 0's rendezvous (one per stage above it).")
    ] = 29500,
) -> None:
    """Run a recipe: every stage whose output is not cached, in dependency order. On several machines, start it on
    each with --nnodes N --node-rank R --master-addr HOST (under Slurm, `srun workbench run RECIPE` sets them)."""
    from workbench.runner.executor import run_recipe
    from workbench.runner.launch import Cluster

    loaded = _load(recipe)
    if nnodes is not None:
        cluster = Cluster(nnodes, node_rank, master_addr, master_port)
    else:
        cluster = Cluster.from_slurm() or Cluster()
    if cluster.node_rank >= cluster.nnodes:
        raise WorkbenchError(f"--node-rank {cluster.node_rank} is not below --nnodes {cluster.nnodes}")
    if cluster.node_rank > 0:
        from workbench.runner.join import join_recipe

        joined = join_recipe(loaded, cluster, console, force=set(force or []))
        console.print(f"[bold green]done[/] on node {cluster.node_rank}: joined {', '.join(joined) or 'no stage'}")
        return
    try:
        outcomes = run_recipe(loaded, force=set(force or []), only=set(only or []), console=console, cluster=cluster)
    except StageHalted as halted:
        # a failed gate: the scores so far, side by side, before the gate table (the error the handler prints)
        _print_scores(loaded, halted.scores)
        raise
    summary = ", ".join(f"{o.name} {o.status}" for o in outcomes)
    console.print(f"[bold green]done[/]: {summary}")
    # the scores of the evaluations this run finished, from the outcomes (no second plan or pull, no reading back)
    evaluations = {o.name: o.info.get("metrics", {}) for o in outcomes if loaded.stages[o.name].kind == "evaluate"}
    _print_scores(loaded, evaluations)


@app.command()
@handled
def compare(
    a: Annotated[str, typer.Argument(help="A recipe run: an MLflow run id, or a recipe file for its latest run.")],
    b: Annotated[str, typer.Argument(help="The run to compare with A, the same way.")],
    html: Annotated[Path | None, typer.Option("--html", help="Also write the comparison as one HTML page.")] = None,
    tracking_uri: Annotated[
        str | None, typer.Option("--tracking-uri", help="Where the runs are (default: a recipe's, else the default).")
    ] = None,
) -> None:
    """What changed between two recipe runs, and did it help: changed stages with their config diff, cached
    stages, metric deltas, gate results, and the samples whose score flipped."""
    from mlflow.tracking import MlflowClient

    from workbench.runner.compare import compare as compare_runs
    from workbench.runner.compare import find_run
    from workbench.runner.compare_render import comparison_html, print_comparison
    from workbench.tracking import check_reachable

    uri = tracking_uri or _tracking_uri_of(a, b)
    check_reachable(uri)
    client = MlflowClient(uri)
    run_a, run_b = find_run(client, a), find_run(client, b)
    if run_a.info.run_id == run_b.info.run_id:
        # two recipe files with one `name:` share their runs: the latest of that name is both sides
        raise WorkbenchError(
            f"{a} and {b} are the same run ({run_a.info.run_id[:8]}): nothing to compare; name runs by their ids "
            "(the recipe's runs are listed in the MLflow UI)"
        )
    comparison = compare_runs(client, run_a, run_b)
    print_comparison(comparison, console)
    if html is not None:
        from workbench.fsio import write_text_atomic

        write_text_atomic(html, comparison_html(comparison))
        console.print(f"wrote {html}")


def _registered_by(recipe: Path) -> tuple[str, str]:
    """The model name a recipe's evaluate stages register, and the recipe's tracking store."""
    from workbench.tracking import default_tracking_uri

    loaded = _load(recipe)
    names = sorted({getattr(config, "registered_model", None) or loaded.recipe.name
                    for config in loaded.stages.values() if getattr(config, "register_model", False)})  # fmt: skip
    if len(names) != 1:
        found = f"registers {', '.join(names)}: name one" if names else "has no evaluate stage with `register: true`"
        raise WorkbenchError(f"{recipe}: the recipe {found}")
    return names[0], default_tracking_uri(loaded.recipe.tracking.uri, loaded.work_root)


def _tracking_uri_of(*references: str) -> str:
    """The tracking store of the first reference that is a recipe file, else the default one."""
    from workbench.tracking import default_tracking_uri

    for reference in references:
        if reference.endswith((".yaml", ".yml")) and Path(reference).is_file():
            loaded = _load(Path(reference))
            return default_tracking_uri(loaded.recipe.tracking.uri, loaded.work_root)
    return default_tracking_uri(None, Path("runs").resolve())


@app.command()
@handled
def report(recipe: RecipeArg) -> None:
    """Print every finished evaluate stage's scores side by side (base vs SFT vs final, ...)."""
    from workbench.runner.plan import finished_evaluations, make_plan

    loaded = _load(recipe)
    if not _print_scores(loaded, finished_evaluations(loaded, make_plan(loaded))):
        errors.print("no finished evaluate stage for this recipe yet (run it first)")
        raise typer.Exit(code=1)
    figures = sorted((loaded.project.store_root / "_figures").glob("*/*.png"), key=lambda p: p.stat().st_mtime)
    if figures:
        latest = figures[-1].parent
        console.print(f"figures of the latest run: {', '.join(str(p) for p in sorted(latest.glob('*.png')))}")


def _print_scores(loaded, evaluations: dict[str, dict[str, float]]) -> bool:
    from workbench.evaluation.report import scores_table

    table = scores_table(loaded, evaluations, width=console.width)
    if table is not None:
        console.print(table)
    return table is not None


@app.command()
@handled
def merge(
    config: Annotated[
        Path, typer.Argument(help="A mergekit config YAML, as mergekit-yaml takes it.", show_default=False)
    ],
    out: Annotated[Path, typer.Argument(help="Output model folder.", show_default=False)],
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty output folder.")] = False,
    seed: Annotated[int | None, typer.Option(help="Seed for randomized methods (dare_*, della*).")] = None,
) -> None:
    """Run a mergekit config unchanged, after workbench's compatibility checks; writes a model card."""
    from workbench.merging.standalone import merge_file

    written = merge_file(config, out, overwrite=overwrite, seed=seed)
    console.print(f"[bold green]merged[/] → {written}")


@app.command(name="eval")
@handled
def eval_model(
    model: Annotated[Path, typer.Argument(help="A model folder (e.g. a stage's model/).", show_default=False)],
    suite: Annotated[list[str], typer.Option("--suite", help="Suite or stock lm-eval task; repeatable.")],
    limit: Annotated[
        int | None, typer.Option(min=1, help="Only the first N samples of each task (tool_use: of each category).")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Prompts generated together.")] = 16,
    data: Annotated[
        list[str] | None, typer.Option("--data", help="SUITE=FILE: use FILE instead of the suite's data.")
    ] = None,
    output: Annotated[Path | None, typer.Option("--output", help="Write results.json and samples here.")] = None,
) -> None:
    """Evaluate a model folder on suites through lm-eval and print the metrics."""
    from workbench.evaluation.api import evaluate_model

    overrides = dict(item.split("=", 1) for item in data or [] if "=" in item)
    if len(overrides) != len(data or []):
        raise WorkbenchError("--data takes SUITE=FILE")
    report = evaluate_model(model, suite, batch_size=batch_size, limit=limit, output_dir=output, data=overrides)
    table = Table(title=f"{model} ({sum(report.counts.values())} samples, {report.seconds:.1f}s)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in report.metrics.items():
        table.add_row(name, f"{value:.4f}")
    console.print(table)


@app.command()
@handled
def promote(
    name: Annotated[
        str,
        typer.Argument(
            help="Registered model name (default registration: the recipe's name), or a recipe file: the model its "
            "evaluate stage registers, in the recipe's own tracking store."
        ),
    ],
    version: Annotated[
        str | None, typer.Option(help="Version to promote. Default: the one aliased 'candidate'.")
    ] = None,
    tracking_uri: Annotated[
        str | None, typer.Option(help="MLflow tracking URI. Default: $MLFLOW_TRACKING_URI, else runs/mlflow.db.")
    ] = None,
) -> None:
    """Move the `champion` alias of a registered model to its `candidate` (or a given version)."""
    from mlflow.tracking import MlflowClient

    from workbench.evaluation.registry import promote as promote_version
    from workbench.tracking import check_reachable, default_tracking_uri

    if name.endswith((".yaml", ".yml")) and Path(name).is_file():
        name, recipe_uri = _registered_by(Path(name))
        uri = tracking_uri or recipe_uri
    else:
        uri = default_tracking_uri(tracking_uri, Path("runs"))
    check_reachable(uri)
    client = MlflowClient(uri)
    new, previous = promote_version(client, name, version)
    console.print(f"{name}: champion -> version {new}" + (f" (was {previous})" if previous else ""))


@app.command()
@handled
def schema() -> None:
    """Print the JSON Schema of recipe files (point your editor's YAML plugin at it)."""
    from workbench.recipe.json_schema import recipe_json_schema
    from workbench.runner import default_catalog

    sys.stdout.write(json.dumps(recipe_json_schema(default_catalog()), indent=2) + "\n")


annotate_app = typer.Typer(
    no_args_is_help=True, help="Preference curation in Argilla: serve, push pairs, pull judgements."
)
app.add_typer(annotate_app, name="annotate")

UrlOption = Annotated[
    str | None, typer.Option("--url", help="Argilla API URL (default $ARGILLA_API_URL, else http://127.0.0.1:6900).")
]
WorkspaceOption = Annotated[str, typer.Option(help="Argilla workspace.")]


@annotate_app.command("serve")
@handled
def annotate_serve(
    annotator: Annotated[list[str] | None, typer.Option("--annotator", help="Annotator account to create.")] = None,
    owner: Annotated[str, typer.Option(help="Owner account (its API key is $ARGILLA_API_KEY or generated).")] = "owner",
    workspace: WorkspaceOption = "preference",
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 6900,
    home: Annotated[Path, typer.Option(help="Folder for the SQLite database.")] = Path("runs/argilla"),
    venv: Annotated[
        Path | None, typer.Option(help="argilla-server venv (default $WORKBENCH_ARGILLA_VENV or .venv-argilla).")
    ] = None,
) -> None:
    """Run the embedded Argilla server until Ctrl-C (generated passwords and API keys are printed once)."""
    from workbench.annotate.server import accounts, start_server, stop_server, wait_ready

    url = f"http://127.0.0.1:{port}"
    process = start_server(home, port, accounts(owner, annotator or []), workspace=workspace, venv=venv)
    wait_ready(url, process)
    console.print(f"[bold green]Argilla[/] at {url} (workspace {workspace}, data in {home}); Ctrl-C stops it")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # a terminated CLI still stops the server
    try:
        process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        stop_server(process)


@annotate_app.command("push")
@handled
def annotate_push(
    pairs: Annotated[Path, typer.Argument(help="JSONL of a prompt and two responses per line.", show_default=False)],
    dataset: Annotated[str, typer.Option(help="Argilla dataset name.")],
    workspace: WorkspaceOption = "preference",
    min_submitted: Annotated[int, typer.Option(min=1, help="Submitted answers each pair needs.")] = 2,
    url: UrlOption = None,
) -> None:
    """Create or extend a pairwise-preference dataset in Argilla (pairs already there are not pushed again)."""
    from workbench.annotate.client import connect
    from workbench.annotate.push import push_pairs

    with console.status(f"pushing {pairs} to {workspace}/{dataset}") as status:  # drawn on terminals only

        def progress(sent: int, total: int) -> None:
            status.update(f"pushing {pairs} to {workspace}/{dataset}: {sent}/{total} new pairs sent")

        report = push_pairs(lambda: connect(url), pairs, workspace, dataset, min_submitted, progress=progress)
    console.print(
        f"{workspace}/{dataset} ({'created' if report.created else 'existing'}, id {report.dataset_id}): "
        f"{report.added} added, {report.already_present} already present, {report.duplicate_lines} duplicate "
        f"line(s) skipped; {report.min_submitted} submitted answer(s) per pair",
        soft_wrap=True,
    )


@annotate_app.command("pull")
@handled
def annotate_pull(
    dataset: Annotated[str, typer.Option(help="Argilla dataset name.")],
    workspace: WorkspaceOption = "preference",
    out: Annotated[Path, typer.Option(help="Root folder of pulled versions.")] = Path("datasets/argilla"),
    url: UrlOption = None,
) -> None:
    """Turn submitted judgements into a preference dataset (JSONL + HF folder) with agreement statistics."""
    from workbench.annotate.client import connect
    from workbench.annotate.pull import pull_preferences

    result = pull_preferences(connect(url), workspace, dataset, out)
    table = Table(title=f"{workspace}/{dataset}")
    table.add_column("metric")
    table.add_column("value")
    for key, value in result.metrics.items():
        table.add_row(key, f"{value:.3f}" if isinstance(value, float) else str(value))
    console.print(table)
    console.print(f"{result.path / 'preferences.jsonl'} (hash {result.content_hash[:16]})", soft_wrap=True)


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    quiet_third_party()
    app()


def quiet_third_party() -> None:
    """Warnings a user can do nothing about, repeated on every run, are left out (--debug keeps them)."""
    if "--debug" in sys.argv:
        return
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")  # mlflow's git probe outside a repository
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    # The Argilla SDK logs an error before raising it, and its client sets up root logging on stderr: the raised
    # error is reported as one line, its log would be a second.
    logging.getLogger("argilla.sdk").setLevel(logging.CRITICAL)
    for module in ("mlflow", "torch", "transformers", "trl", "peft", "lm_eval", "datasets", "pydantic", "mergekit"):
        warnings.filterwarnings("ignore", category=FutureWarning, module=module)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=module)
        warnings.filterwarnings("ignore", category=UserWarning, module=module)


if __name__ == "__main__":
    main()
