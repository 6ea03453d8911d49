"""The disk fills up while a training stage writes its checkpoints, on a small real file system (a tmpfs mounted
under the work folder): one line naming the path, the space left and the space the stage needs; nothing is marked
done; once space is freed the next run resumes from the last complete checkpoint and finishes."""

from __future__ import annotations

import contextlib
import errno
import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import wait_for_checkpoint, workbench_cli, write_tiny_project

pytestmark = pytest.mark.slow

STEPS, SAVE_EVERY = 400, 20


@contextlib.contextmanager
def small_file_system(path: Path, size: str):
    path.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.decode().strip()}): needs root with CAP_SYS_ADMIN")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(folder: Path) -> Path:
    """Write one file until the file system refuses another byte."""
    filler = folder / "filler.bin"
    chunk = b"\0" * 2**16
    with filler.open("wb") as handle:
        try:
            while True:
                handle.write(chunk)
                handle.flush()
        except OSError as error:
            assert error.errno == errno.ENOSPC
    with contextlib.suppress(OSError):
        filler.open("ab").close()
    return filler


def test_a_full_disk_mid_training_is_one_line_and_the_next_run_resumes(tmp_path):
    recipe = write_tiny_project(
        tmp_path,
        {"max_steps": STEPS, "save_steps": SAVE_EVERY, "logging_steps": 50, "sample_count": 0},
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",  # the tracking store stays off the full disk
    )
    with small_file_system(tmp_path / "runs", "64m") as runs:
        process = subprocess.Popen(
            [*workbench_cli(), "run", str(recipe)],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            # a first checkpoint is complete: fill the disk before the next one
            wait_for_checkpoint(tmp_path, process, poll=0.05)
            filler = fill(runs)
            out, err = process.communicate(timeout=600)
        finally:
            if process.poll() is None:
                process.kill()
        assert process.returncode == 1, out + err
        errors = [line for line in err.splitlines() if line.startswith("error")]
        assert len(errors) == 1 and err.strip().endswith(errors[0]), err[-3000:]
        assert errors[0].startswith(f"error: no space left on the file system of {runs}/tiny/sft/"), errors[0]
        assert "free; the stage needs about" in errors[0] and "Traceback" not in err
        assert not list(runs.glob("tiny/sft/*/stage.json")), "nothing is marked done"

        filler.unlink()
        again = subprocess.run([*workbench_cli(), "run", str(recipe)], cwd=tmp_path, capture_output=True, text=True)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "sft (sft) resuming" in again.stdout and "resuming from checkpoint-" in again.stdout
        [done] = runs.glob("tiny/sft/*/stage.json")
        assert json.loads(done.read_text())["metrics"]["train/steps"] == STEPS
