"""One rank of a distributed stage: `python -m workbench.runner.worker SPEC`, started by torchrun or accelerate.

The `workbench run` process keeps the plan, the lock, the MLflow parent run and the stage's child run; it writes
SPEC (`launch.StageSpec`) and launches the workers. Every rank rebuilds the stage's context from SPEC and runs the
kind's `run`; rank 0 alone logs (into the stage's existing child run, keeping what the server misses in the stage's
tracking outbox; the other ranks hold a NullTracker) and writes files, and writes the stage's result for the parent to commit. A
rank that fails writes its one-line reason beside SPEC, so the parent can say which rank failed and why.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from rich.console import Console

from workbench.api.context import Project, StageContext, StageInput
from workbench.api.resources import Resources
from workbench.errors import WorkbenchError, first_line
from workbench.fsio import write_json_atomic, write_text_atomic


def rank_error_file(spec_path: Path, rank: int) -> Path:
    return spec_path.parent / f"rank{rank}.error"


def result_file(spec_path: Path) -> Path:
    return spec_path.parent / "result.json"


def _context(spec: dict, kind, rank: int, world_size: int, console: Console, tracker) -> StageContext:
    folders = ("root", "store_root", "work_root")
    project = {key: Path(value) if key in folders else value for key, value in spec["project"].items()}
    return StageContext(
        project=Project(**project),  # the recipe's own settings (trust_remote_code included), as node 0 read them
        config=kind.config.model_validate(spec["config"]),
        stage_hash=spec["stage_hash"],
        tmp_dir=Path(spec["tmp_dir"]),
        inputs={name: StageInput(name, Path(given["dir"]), given["info"]) for name, given in spec["inputs"].items()},
        tokenizer_dir=Path(spec["tokenizer_dir"]),
        tracker=tracker,
        console=console,
        resources=Resources.model_validate(spec["resources"]),
        rank=rank,
        world_size=world_size,
        tokenizer_fingerprint=spec["tokenizer_fingerprint"],
    )


def _tracker(spec: dict, rank: int):
    """Rank 0: the stage's child run, its calls kept in the stage's outbox while the server is away."""
    from workbench.tracking import NullTracker, StageTracker

    if rank != 0:
        return NullTracker(spec["run_id"])
    from mlflow.tracking import MlflowClient

    from workbench.tracking_outbox import ResilientClient

    client = ResilientClient(
        MlflowClient(spec["tracking_uri"]), spec["tracking_uri"], Path(spec["project"]["store_root"])
    )
    client.stage = spec["config"]["name"]
    return StageTracker(client, spec["run_id"])


def main(argv: list[str] | None = None) -> int:
    spec_path = Path((argv or sys.argv[1:])[0])
    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    rank = int(os.environ.get("RANK", "0"))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    console = Console(soft_wrap=True) if rank == 0 else Console(quiet=True)
    _share_dataset_cache(spec_path.parent / "datasets")
    try:
        from workbench.runner.catalog import default_catalog

        kind = default_catalog().kinds[spec["kind"]]  # plug-ins included, loaded once
        ctx = _context(spec, kind, rank, world_size, console, _tracker(spec, rank))
        result = kind.run(ctx)
        if rank == 0:
            write_json_atomic(
                result_file(spec_path), {"metrics": result.metrics, "details": result.details, "halt": result.halt}
            )
    except BaseException as error:  # noqa: BLE001 (one line for the parent, whatever failed; then exit non-zero)
        reason = str(error) if isinstance(error, WorkbenchError) else f"{type(error).__name__}: {first_line(error)}"
        write_text_atomic(rank_error_file(spec_path, rank), reason.splitlines()[0] if reason else repr(error))
        raise
    finally:
        _leave_process_group()
    return 0


def _share_dataset_cache(folder: Path) -> None:
    """Point every rank's `datasets` temporary cache at one folder beside the spec. Stages build in-memory datasets,
    whose map results `datasets` keeps in a per-process temporary folder; trl maps (and caches reference log-probs)
    on the main process first and has the other ranks read the result by fingerprint, which only works when the
    folder is shared."""
    from datasets import fingerprint

    folder.mkdir(parents=True, exist_ok=True)

    class SharedFolder:
        name = str(folder)

    fingerprint._TEMP_DIR_FOR_TEMP_CACHE_FILES = SharedFolder()


def _leave_process_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _exit(code: int) -> None:
    """Leave without interpreter finalization. Everything the parent reads (result.json, rank errors) is written
    atomically and the process group is gone by now; what finalization would still do is tear down C++ threads
    (gloo's, torch's pools), and with the gloo backend that tear-down now and then aborts a rank that finished
    ("terminate called without an active exception", SIGABRT), failing a stage whose work was done."""
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


if __name__ == "__main__":
    try:
        exit_code = main()
    except SystemExit as stop:  # as the interpreter reads it: None is 0, a message is printed and is 1
        exit_code = stop.code if isinstance(stop.code, int) else 0 if stop.code is None else 1
        if not isinstance(stop.code, int | None):
            print(stop.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001 (its reason is in the rank's error file; the traceback goes to the log)
        import traceback

        traceback.print_exc()
        exit_code = 1
    _exit(exit_code)
