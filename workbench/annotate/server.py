"""Start and stop the embedded Argilla server from its own virtual environment.

argilla-server pins pydantic, fastapi and httpx versions that clash with the training stack, so it
lives in a separate venv (`scripts/setup.sh` creates `.venv-argilla`); `launcher.py` runs there.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from workbench.annotate.client import AnnotationError

REPO = Path(__file__).resolve().parents[2]
LAUNCHER = Path(__file__).resolve().with_name("launcher.py")
ARGILLA_SERVER_VERSION = "2.8.0"


@dataclass(frozen=True)
class Account:
    """An Argilla user to create at start-up; secrets come from the environment or are generated."""

    username: str
    role: str
    password: str
    api_key: str
    generated: bool
    """The secrets were generated here (printed once by the launcher when it creates the user)."""


def server_python(venv: Path | None = None) -> Path:
    """The argilla-server venv's python: `venv`, else $WORKBENCH_ARGILLA_VENV, else `.venv-argilla`."""
    root = Path(venv or os.environ.get("WORKBENCH_ARGILLA_VENV") or REPO / ".venv-argilla")
    python = root / "bin" / "python"
    if not python.is_file():
        raise AnnotationError(
            f"argilla-server virtual environment not found at {root}: run scripts/setup.sh "
            f"(or point WORKBENCH_ARGILLA_VENV at a venv with argilla-server=={ARGILLA_SERVER_VERSION} and fakeredis)"
        )
    return python


def _env_name(username: str) -> str:
    return re.sub(r"[^A-Z0-9]", "_", username.upper())


def accounts(owner: str, annotators: list[str]) -> list[Account]:
    """The owner's API key is $ARGILLA_API_KEY (the key push and pull use) and its password
    $ARGILLA_OWNER_PASSWORD; annotator NAME's are $ARGILLA_API_KEY_NAME and $ARGILLA_PASSWORD_NAME.
    Whatever is unset is generated."""
    made = []
    for username, role in [(owner, "owner"), *[(name, "annotator") for name in annotators]]:
        suffix = _env_name(username)
        key_var = "ARGILLA_API_KEY" if role == "owner" else f"ARGILLA_API_KEY_{suffix}"
        password_var = "ARGILLA_OWNER_PASSWORD" if role == "owner" else f"ARGILLA_PASSWORD_{suffix}"
        api_key, password = os.environ.get(key_var), os.environ.get(password_var)
        if not re.fullmatch(r"[a-z0-9_-]+", username):
            raise AnnotationError(f"Argilla username {username!r}: use lowercase letters, digits, '-' and '_'")
        if password is not None and len(password) < 8:
            raise AnnotationError(f"{password_var} must have at least 8 characters")
        made.append(
            Account(
                username=username,
                role=role,
                password=password or secrets.token_urlsafe(12),
                api_key=api_key or secrets.token_urlsafe(24),
                generated=api_key is None or password is None,
            )
        )
    return made


def start_server(
    home: Path,
    port: int,
    users: list[Account],
    workspace: str = "preference",
    host: str = "127.0.0.1",
    venv: Path | None = None,
    log: IO | None = None,
) -> subprocess.Popen:
    """Start the launcher in its own process group (stop it with `stop_server`); returns once started,
    not once ready (see `wait_ready`)."""
    python = server_python(venv)
    config = {
        "host": host, "port": port, "home": str(home.resolve()), "workspace": workspace,
        "users": [{"username": u.username, "role": u.role, "password": u.password, "api_key": u.api_key,
                   "generated": u.generated} for u in users],
    }  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ARGILLA_", "PYTHON"))}
    process = subprocess.Popen(
        [str(python), str(LAUNCHER)], stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT if log else None,
        env=env, start_new_session=True, text=True,
    )  # fmt: skip
    process.stdin.write(json.dumps(config))  # secrets go through a pipe: never on disk or in `ps`
    process.stdin.close()
    return process


def wait_ready(url: str, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AnnotationError(f"Argilla server for {url} exited with code {process.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"{url}/api/v1/version", timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers HTTP: it is up
        except OSError:
            time.sleep(0.3)
    raise AnnotationError(f"Argilla server at {url} did not become ready in {timeout:.0f} s")


def stop_server(process: subprocess.Popen, timeout: float = 20) -> None:
    """SIGTERM its process group (uvicorn shuts down cleanly), SIGKILL if it has not exited in `timeout`."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
