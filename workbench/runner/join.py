"""The other nodes of a multi-node run: `workbench run RECIPE --nnodes N --node-rank R` with R > 0.

Node 0 runs the recipe as always: it owns the plan, the lock, the MLflow runs and the stage store (which every node
must see at the same path: shared storage). It announces its session in `<store>/.cluster.json` and, for each
stage on several nodes, writes the stage's launch spec. Every other node plans the same recipe, waits for each
multi-node stage's spec and starts its own torchrun with its node rank on it: its workers are ranks like any other
and, not being rank 0, write nothing but their logs. It ends when node 0's session ends.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from pathlib import Path

from rich.console import Console

from workbench.errors import WorkbenchError
from workbench.fsio import write_json_atomic
from workbench.recipe.loaded import LoadedRecipe
from workbench.runner.launch import Cluster, run_launcher, spec_path

SESSION_FILE = ".cluster.json"


def announce(store_root: Path, session: str, state: str) -> None:
    """Node 0: tell the other nodes a session is `running`, or has `finished` / `failed`."""
    store_root.mkdir(parents=True, exist_ok=True)
    write_json_atomic(store_root / SESSION_FILE,
                      {"session": session, "state": state, "host": socket.gethostname(), "pid": os.getpid(),
                       "time": time.time()})  # fmt: skip


def new_session() -> str:
    return uuid.uuid4().hex


def join_recipe(loaded: LoadedRecipe, cluster: Cluster, console: Console, force: set[str] = frozenset(),
                poll: float = 0.5, start_timeout: float = 600.0) -> list[str]:  # fmt: skip
    """Take part in every multi-node stage node 0 will run in its next session (those not cached, and those
    `force`d, as node 0 was told); returns the stages joined."""
    from workbench.runner.plan import make_plan

    plan = make_plan(loaded)
    forced = loaded.descendants(loaded.expand(set(force))) if force else set()
    wanted = [
        s for s in plan.stages if loaded.resources(s.name).nodes > 1 and (s.status != "cached" or s.name in forced)
    ]
    if not wanted:
        console.print("no stage of this recipe left to run on several nodes: nothing to do on this node")
        return []
    started = time.time()
    session = _wait_for_session(loaded.project.store_root, started, start_timeout, poll)
    console.print(f"node {cluster.node_rank}: joined node 0's session {session[:12]}")
    joined = []
    for stage in wanted:
        spec = spec_path(plan.store.tmp_dir(stage.name, stage.hash))
        while True:
            data = _read_spec(spec)
            if data is not None and data.get("session") == session:
                console.print(f"node {cluster.node_rank}: {stage.name} on {data['master_addr']}:{data['master_port']}")
                run_launcher(stage.name, spec, loaded.resources(stage.name), cluster.node_rank, data["master_addr"],
                             data["master_port"], loaded.root)  # fmt: skip
                joined.append(stage.name)
                break
            state = _session_state(loaded.project.store_root, session)
            if state != "running":
                if plan.store.is_done(stage.name, stage.hash):
                    break  # node 0 had it cached
                raise WorkbenchError(f"node 0's session ended ({state}) before it launched stage '{stage.name}'")
            time.sleep(poll)
    return joined


def _wait_for_session(store_root: Path, started: float, timeout: float, poll: float) -> str:
    """The session node 0 announced after this node started (or is still running), waiting up to `timeout`."""
    while time.time() - started < timeout:
        found = _read(store_root)
        if found and found.get("state") == "running":
            return found["session"]
        time.sleep(poll)
    raise WorkbenchError(
        f"node 0 did not start this recipe within {timeout:.0f}s (no running session in {store_root / SESSION_FILE}); "
        "start `workbench run ... --node-rank 0` on the first node, with the stage store on storage every node sees"
    )


def _session_state(store_root: Path, session: str) -> str:
    found = _read(store_root)
    if not found or found.get("session") != session:
        return "replaced"
    return found.get("state", "unknown")


def _read(store_root: Path) -> dict | None:
    try:
        return json.loads((store_root / SESSION_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _read_spec(spec: Path) -> dict | None:
    try:
        return json.loads(spec.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
