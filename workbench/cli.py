"""The `workbench` command line."""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from workbench.errors import RecipeError, WorkbenchError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Declarative post-training for small language models.",
)
console = Console()
errors = Console(stderr=True)

RecipeArg = Annotated[Path, typer.Argument(help="Recipe YAML file.", show_default=False)]


def _fail(error: Exception) -> None:
    if isinstance(error, RecipeError):
        for problem in error.problems:
            errors.print(f"[red]error:[/] {problem}", highlight=False, markup=True, soft_wrap=True)
    else:
        errors.print(f"[red]error:[/] {error}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=1)


def _load(recipe: Path):
    from workbench.recipe.loader import load_recipe

    try:
        return load_recipe(recipe)
    except WorkbenchError as error:
        _fail(error)


@app.command()
def validate(recipe: RecipeArg) -> None:
    """Check a recipe and report every problem at once (exit 1 if any)."""
    loaded = _load(recipe)
    console.print(f"OK: {recipe} ({len(loaded.stages)} stages: {' -> '.join(loaded.order)})")


@app.command()
def plan(recipe: RecipeArg) -> None:
    """Show the stage graph and what is cached, resumable or will run."""
    from workbench.runner.plan import make_plan

    loaded = _load(recipe)
    try:
        the_plan = make_plan(loaded)
    except WorkbenchError as error:
        _fail(error)
    table = Table(title=f"{loaded.recipe.name} ({recipe})")
    for column in ("stage", "kind", "inputs", "hash", "status"):
        table.add_column(column)
    colors = {"cached": "green", "resume": "yellow", "run": "cyan"}
    for stage in the_plan.stages:
        label = {"cached": "cached", "resume": "resume from checkpoint", "run": "will run"}[stage.status]
        inputs = ", ".join(stage.inputs) or getattr(loaded.stages[stage.name], "model", None) or "-"
        table.add_row(stage.name, stage.kind, inputs, stage.hash[:12], f"[{colors[stage.status]}]{label}[/]")
    console.print(table)
    console.print(f"outputs under {the_plan.store.root}")


@app.command()
def run(
    recipe: RecipeArg,
    force: Annotated[
        list[str] | None, typer.Option("--force", help="Re-run this stage (and what depends on it) even if cached.")
    ] = None,
    only: Annotated[
        list[str] | None, typer.Option("--only", help="Run only this stage; its inputs must be finished.")
    ] = None,
    debug: Annotated[bool, typer.Option(help="Show full tracebacks.")] = False,
) -> None:
    """Run a recipe: every stage whose output is not cached, in dependency order."""
    from workbench.runner.executor import run_recipe

    loaded = _load(recipe)
    try:
        outcomes = run_recipe(loaded, force=set(force or []), only=set(only or []), console=console)
    except WorkbenchError as error:
        if debug:
            traceback.print_exc()
        _fail(error)
    except KeyboardInterrupt:
        errors.print("[red]interrupted[/]: finished stages are kept; the next run resumes the interrupted one")
        raise typer.Exit(code=130) from None
    summary = ", ".join(f"{o.name} {o.status}" for o in outcomes)
    console.print(f"[bold green]done[/]: {summary}")


@app.command()
def schema() -> None:
    """Print the JSON Schema of recipe files (point your editor's YAML plugin at it)."""
    from workbench.recipe.json_schema import recipe_json_schema

    sys.stdout.write(json.dumps(recipe_json_schema(), indent=2) + "\n")


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    app()


if __name__ == "__main__":
    main()
