"""Launch a distributed stage's workers through PyTorch's elastic launcher (`torch.distributed.run`, what `torchrun`
runs) or `accelerate launch`, never a launcher of our own; wait for every rank; turn a failure into one line.

The stage's spec and the ranks' one-line errors live in `<stage>.tmp/.launch/`; torchrun writes each rank's
output to `.launch/logs/` as well as to the terminal. The folder is removed once the stage succeeded, before the
stage folder is committed, so only a complete stage is ever marked done.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from workbench.api.context import StageContext, StageResult
from workbench.api.resources import Resources
from workbench.errors import StageError
from workbench.fsio import write_json_atomic
from workbench.runner.worker import result_file

LAUNCH_FOLDER = ".launch"


@dataclass(frozen=True)
class Cluster:
    """Where this `workbench run` sits among the machines of a multi-node stage (from the command line, or Slurm)."""

    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    session: str = ""
    """Node 0's session id, which the other nodes match launch specs against (set by `run_recipe`)."""

    @classmethod
    def from_slurm(cls, environ: dict[str, str] | None = None) -> Cluster | None:
        """The cluster Slurm describes to a task started by `srun` (one task per node), or None outside Slurm."""
        env = os.environ if environ is None else environ
        if "SLURM_JOB_ID" not in env or "SLURM_NNODES" not in env:
            return None
        hosts = expand_hostlist(env.get("SLURM_JOB_NODELIST", env.get("SLURM_NODELIST", "127.0.0.1")))
        port = 20000 + int(env["SLURM_JOB_ID"]) % 20000  # one port per job, the same on every node
        return cls(int(env["SLURM_NNODES"]), int(env.get("SLURM_NODEID", "0")), hosts[0], port)


def expand_hostlist(hostlist: str) -> list[str]:
    """Slurm's compact host list (`gpu[01-03,07],login1`) as host names, in order."""
    hosts = []
    for part in re.findall(r"[^,\[]+(?:\[[^\]]*\])?", hostlist):
        match = re.fullmatch(r"(.*)\[(.*)\]", part)
        if not match:
            hosts.append(part)
            continue
        prefix, ranges = match.groups()
        for item in ranges.split(","):
            low, _, high = item.partition("-")
            for number in range(int(low), int(high or low) + 1):
                hosts.append(f"{prefix}{number:0{len(low)}d}")
    return hosts


def spec_path(tmp_dir: Path) -> Path:
    return tmp_dir / LAUNCH_FOLDER / "spec.json"


def write_spec(ctx: StageContext, run_id: str, tracking_uri: str, cluster: Cluster, port: int) -> Path:
    """Everything a worker needs to rebuild the stage's context, plus where the launch meets (for other nodes)."""
    project = ctx.project
    spec = {
        "launch_id": uuid.uuid4().hex,
        "kind": ctx.config.kind,
        "config": ctx.config.model_dump(mode="json", by_alias=True),
        "project": {
            "root": str(project.root),
            "store_root": str(project.store_root),
            "work_root": str(project.work_root),
            "recipe_name": project.recipe_name,
            "seed": project.seed,
            "trust_remote_code": project.trust_remote_code,
        },  # fmt: skip
        "stage_hash": ctx.stage_hash,
        "tmp_dir": str(ctx.tmp_dir),
        "inputs": {name: {"dir": str(given.dir), "info": given.info} for name, given in ctx.inputs.items()},
        "tokenizer_dir": str(ctx.tokenizer_dir),
        "tokenizer_fingerprint": ctx.tokenizer_fingerprint,
        "resources": ctx.resources.model_dump(mode="json"),
        "tracking_uri": tracking_uri,
        "run_id": run_id,
        "master_addr": cluster.master_addr,
        "master_port": port,
        "session": cluster.session,
    }
    path = spec_path(ctx.tmp_dir)
    shutil.rmtree(path.parent, ignore_errors=True)  # a killed launch's leftovers: logs, errors, an old result
    path.parent.mkdir(parents=True)
    write_json_atomic(path, spec)
    return path


def launcher_command(spec: Path, resources: Resources, node_rank: int, addr: str, port: int, root: Path) -> list[str]:
    """torchrun (or accelerate launch, with an accelerate config) running the worker module on this node."""
    worker = ["-m", "workbench.runner.worker", str(spec)]
    if resources.accelerate_config is not None:
        return [sys.executable, "-m", "accelerate.commands.launch",
                "--config_file", str(root / resources.accelerate_config),
                "--num_processes", str(resources.world_size), "--num_machines", str(resources.nodes),
                "--machine_rank", str(node_rank), "--main_process_ip", addr, "--main_process_port", str(port),
                *worker]  # fmt: skip
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(resources.processes)]
    if resources.nodes == 1:
        command += ["--standalone"]  # a free port of its own on this machine
    else:
        command += ["--nnodes", str(resources.nodes), "--node-rank", str(node_rank),
                    "--master-addr", addr, "--master-port", str(port)]  # fmt: skip
    logs = spec.parent / "logs"
    return [*command, "--log-dir", str(logs), "--redirects", "3", "--tee", "3", *worker]


def run_distributed(ctx: StageContext, run_id: str, tracking_uri: str, cluster: Cluster, port: int) -> StageResult:
    """Launch the stage's ranks on this node (rank 0's node), wait for all, return rank 0's result."""
    resources = ctx.resources
    if resources.strategy in ("fsdp", "deepspeed") and resources.accelerate_config is None and not _has_cuda():
        # accelerate drops the FSDP and DeepSpeed plugins on a CPU process group; the run would be plain DDP
        raise StageError(
            f"stage '{ctx.config.name}': strategy '{resources.strategy}' needs CUDA GPUs (accelerate runs it only "
            "there) and this machine has none: use strategy: ddp on CPU"
        )
    spec = write_spec(ctx, run_id, tracking_uri, cluster, port)
    where = f"{resources.processes} processes" + (f" on each of {resources.nodes} nodes" if resources.nodes > 1 else "")
    ctx.console.print(f"  launching {where} ({resources.strategy}) with torchrun")
    run_launcher(ctx.config.name, spec, resources, cluster.node_rank, cluster.master_addr, port, ctx.project.root)
    saved = json.loads(result_file(spec).read_text(encoding="utf-8"))
    shutil.rmtree(spec.parent, ignore_errors=True)
    return StageResult(metrics=saved["metrics"], details=saved["details"], halt=saved["halt"])


def run_launcher(stage: str, spec: Path, resources: Resources, node_rank: int, addr: str, port: int, root: Path):
    """Run the launcher in the foreground; on any failure raise a one-line StageError naming the rank and why."""
    command = launcher_command(spec, resources, node_rank, addr, port, root)
    tail: deque[str] = deque(maxlen=200)
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, errors="replace",
                               preexec_fn=_die_with_parent)  # fmt: skip
    try:
        for line in process.stderr:
            sys.stderr.write(line)
            tail.append(line.rstrip("\n"))
        code = process.wait()
    except KeyboardInterrupt:
        process.send_signal(signal.SIGINT)
        process.wait()
        raise
    if code != 0 or (node_rank == 0 and not result_file(spec).is_file()):
        raise StageError(f"stage '{stage}': {failure_line(spec, list(tail), code)}; nothing was marked done "
                         "(the next run resumes from the last checkpoint)")  # fmt: skip


def failure_line(spec: Path, launcher_lines: list[str], code: int) -> str:
    """Which rank failed and why: that rank's own one-line error when it wrote one, else the signal or exit code,
    with the last line it printed. The launcher lists every failed rank, its first observed failure ("root cause")
    first; but a rank that lost a peer mid-collective, or that the launcher stopped after another failed, failed
    because of that other rank, and may be observed first (a killed rank writes no error, so it is timed when the
    launcher notices). The first failure that is not such a consequence is named; if all are, the first observed."""
    errors = {
        int(p.stem.removeprefix("rank")): p.read_text(encoding="utf-8").strip() for p in spec.parent.glob("rank*.error")
    }
    # without torchrun's summary, the ranks that wrote an error (and then exited 1) are the failures known
    failures = _launcher_failures("\n".join(launcher_lines)) or [(rank, 1) for rank in sorted(errors)]
    if failures:
        rank, exit_code = next((f for f in failures if not _is_consequence(*f, errors)), failures[0])
        if exit_code < 0:
            last = _last_output_line(spec, rank)
            return f"rank {rank} was killed by {_signal_name(-exit_code)}" + (f" (last output: {last})" if last else "")
        if rank in errors:
            return f"rank {rank} failed: {errors[rank]}"
        last = _last_output_line(spec, rank)
        return f"rank {rank} exited with {exit_code}" + (f" (last output: {last})" if last else "")
    lines = [line for line in launcher_lines if line.strip()]
    return f"the launcher exited with {code}" + (f": {lines[-1].strip()}" if lines else "")


_FAILURE = re.compile(r"rank\s*:\s*(\d+)\s*\(local_rank:\s*\d+\)\s*\n\s*exitcode\s*:\s*(-?\d+)")
_PEER_LOST = re.compile(  # gloo's and NCCL's words for a peer that went away in the middle of a collective
    r"closed by peer|reset by peer|logs of the remote worker|remote process exited|communicator was aborted"
    r"|DistNetworkError|broken pipe",
    re.IGNORECASE,
)


def _launcher_failures(text: str) -> list[tuple[int, int]]:
    """(rank, exit code) of each failure in torchrun's summary, its root cause first, then the others in order."""
    before, _, root = text.rpartition("Root Cause")  # no summary: ("", "", text), every failure in order
    found = [(int(rank), int(code)) for rank, code in _FAILURE.findall(root)]
    others = [(int(rank), int(code)) for rank, code in _FAILURE.findall(before)]
    return found + [failure for failure in others if failure not in found]


def _is_consequence(rank: int, exit_code: int, errors: dict[int, str]) -> bool:
    """Whether the rank failed because another did: stopped by the launcher (SIGTERM, SIGINT) or its own error is
    a lost peer."""
    if exit_code in (-signal.SIGTERM, -signal.SIGINT):
        return True
    return exit_code > 0 and rank in errors and _PEER_LOST.search(errors[rank]) is not None


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _last_output_line(spec: Path, rank: int) -> str | None:
    """The last non-empty line rank `rank` wrote to stderr (torchrun's per-rank log)."""
    logs = sorted((spec.parent / "logs").glob(f"**/attempt_*/{rank}/stderr.log"))
    if not logs:
        return None
    lines = [line.strip() for line in logs[-1].read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][:300] if lines else None


def _die_with_parent() -> None:
    """Linux: the launcher (and so its workers) gets SIGTERM if `workbench run` itself is killed."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()
