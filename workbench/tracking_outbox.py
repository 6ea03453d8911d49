"""Tracking calls that could not reach the server, kept on disk and sent once it is back.

A post-training stage runs for hours; its tracking server may restart meanwhile, and a tracking hiccup must not
throw the stage away. Every call that only *records* something (metrics, params, tags, artifacts, dataset and model
inputs and outputs, the end of a run) goes through `ResilientClient`: when the server does not answer, the call is
written to the outbox folder (one JSON file per call, the files it names copied beside it) and the caller goes on.
Later calls queue behind it, in order, until the server answers its health check again (asked at most every
`PROBE_SECONDS`); the outbox is then sent first. `workbench sync` and the start of the next `workbench run` send
what is left. Calls that must return something (create a run, read a model) cannot wait: they raise
`TrackingUnavailable`, one line naming the server.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError
from workbench.fsio import write_json_atomic

OUTBOX = "tracking-outbox"
"""The folder name of an outbox: `<work>/<recipe>/<stage>/tracking-outbox/` while a stage runs, else
`<work>/<recipe>/tracking-outbox/`."""
PROBE_SECONDS = 30.0
# Calls that record and return nothing the caller needs: safe to send later, in order.
QUEUEABLE = frozenset(
    {
        "log_batch",
        "log_metric",
        "log_param",
        "set_tag",
        "log_dict",
        "log_text",
        "log_table",
        "log_artifact",
        "log_artifacts",
        "log_inputs",
        "log_outputs",
        "set_terminated",
        "finalize_logged_model",
        "log_model_artifacts",
        "set_model_version_tag",
        "set_registered_model_alias",
    }
)
_sequence = itertools.count()


class TrackingUnavailable(WorkbenchError):
    """The tracking server did not answer a call that cannot be kept for later."""


def is_unreachable(error: BaseException) -> bool:
    """Whether `error` says the server did not answer (refused, timed out, 5xx after mlflow's retries), as opposed
    to a request it refused (a bad parameter, a missing run)."""
    import requests
    from mlflow.exceptions import MlflowException

    if isinstance(error, requests.HTTPError):
        return error.response is not None and error.response.status_code >= 500
    if isinstance(error, (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError)):
        return True
    if isinstance(error, MlflowException):
        # mlflow's REST layer wraps a request that failed after its retries as "API request to URL failed with ..."
        message = str(error.message)
        return "failed with exception" in message or "failed with timeout exception" in message
    return False


def health_problem(uri: str, timeout: float = 3.0) -> str | None:
    """Why the server's health check fails (refused, timed out, a 5xx), or None when it answers. Non-HTTP stores
    are local and always answer; a server without /health that answers 4xx is still a server."""
    if not uri.startswith(("http://", "https://")):
        return None
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as response:
            return None if response.status < 500 else f"HTTP {response.status}"
    except urllib.error.HTTPError as error:
        return None if error.code < 500 else f"HTTP {error.code}"
    except (urllib.error.URLError, OSError) as error:
        return str(getattr(error, "reason", error))


def server_answers(uri: str, timeout: float = 3.0) -> bool:
    return health_problem(uri, timeout) is None


def quick_http_failures() -> None:
    """mlflow retries a failed request 7 times with doubling waits (about four minutes) before it gives up; with an
    outbox behind every recording call, a few seconds is enough. The user's own settings win."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")


class ResilientClient:
    """An `MlflowClient` whose recording calls are kept in an outbox while the server is away (module docstring).

    `store_root` is the recipe's work folder; `stage`, set while a stage runs, puts new entries in its folder."""

    def __init__(self, client, uri: str, store_root: Path, on_queue: Callable[[str], None] | None = None):
        quick_http_failures()
        self.client, self.uri, self.store_root = client, uri, Path(store_root)
        self.stage: str | None = None
        self.on_queue = on_queue or (lambda message: None)
        self.away_since: float | None = None
        self._last_probe = 0.0
        self.queued = 0

    @property
    def outbox(self) -> Path:
        return (self.store_root / self.stage if self.stage else self.store_root) / OUTBOX

    @property
    def offline(self) -> bool:
        return self.away_since is not None

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.client, name)
        if not callable(attribute) or name.startswith("_"):
            return attribute

        def call(*args, **kwargs):
            if self.offline and not self.back_online():
                if name in QUEUEABLE:
                    return self._queue(name, args, kwargs)
                raise self.unavailable()
            try:
                return attribute(*args, **kwargs)
            except Exception as error:
                if not is_unreachable(error):
                    raise
                self._went_away(error)
                if name in QUEUEABLE:
                    return self._queue(name, args, kwargs)
                raise self.unavailable() from None

        return call

    def back_online(self) -> bool:
        """Probe the server (at most every PROBE_SECONDS); once it answers, send the outbox and go on online."""
        now = time.monotonic()
        if now - self._last_probe < PROBE_SECONDS:
            return False
        self._last_probe = now
        if not server_answers(self.uri):
            return False
        try:
            send_outboxes(self.client, outboxes(self.store_root), self.on_queue)
        except TrackingUnavailable:
            return False
        self.away_since, self.queued = None, 0  # all sent: nothing is kept any more
        return True

    def ensure_online(self) -> None:
        """Before something that needs the server (a new stage's run): probe now, raise if it is still away."""
        if self.offline:
            self._last_probe = 0.0
            if not self.back_online():
                raise self.unavailable()

    def unavailable(self) -> TrackingUnavailable:
        kept = (
            f"; {self.queued} tracking calls are kept under {self.store_root} ({OUTBOX}/) and sent by the next run"
            if self.queued
            else ""
        )
        return TrackingUnavailable(
            f"MLflow tracking server {self.uri} is not answering{kept}: start it again and rerun "
            "(finished stages are cached), or `workbench sync` once it is back"
        )

    def _went_away(self, error: BaseException) -> None:
        if self.away_since is None:
            self.away_since = self._last_probe = time.monotonic()
            self.on_queue(
                f"MLflow tracking server {self.uri} is not answering ({str(error).splitlines()[0][:160]}); the stage "
                f"goes on and its tracking calls are kept in {self.outbox}"
            )

    def _queue(self, method: str, args: tuple, kwargs: dict) -> None:
        self.outbox.mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns():020d}-{os.getpid()}-{next(_sequence):06d}"
        files = self.outbox / f"{name}.files"
        args, kwargs = list(args), dict(kwargs)
        # log_model_artifacts sends a committed stage's model folder, which stays: referenced, not copied
        if method in ("log_artifact", "log_artifacts"):
            _replace_path(args, kwargs, 1, "local_path" if method == "log_artifact" else "local_dir", files)
        entry = {"method": method, "args": _encode(args), "kwargs": _encode(kwargs)}
        write_json_atomic(self.outbox / f"{name}.json", entry)
        self.queued += 1


def _replace_path(args: list, kwargs: dict, index: int, keyword: str, files: Path) -> None:
    """Copy the file or folder a call sends into the outbox (the original may be a temporary) and point at it."""
    source = Path(kwargs[keyword] if keyword in kwargs else args[index])
    target = files / source.name
    files.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, target)
    else:
        shutil.copy2(source, target)
    if keyword in kwargs:
        kwargs[keyword] = str(target)
    else:
        args[index] = str(target)


def _encode(value: Any) -> Any:
    """JSON for a call's arguments: mlflow entities as their protobuf message, paths as strings."""
    if isinstance(value, (list, tuple)):
        return [_encode(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _encode(item) for key, item in value.items()}
    if isinstance(value, Path):
        return str(value)
    if type(value).__module__.startswith("mlflow.entities") and hasattr(value, "to_proto"):
        from google.protobuf.json_format import MessageToDict

        proto = value.to_proto()
        return {
            "__entity__": type(value).__name__,
            "__proto__": proto.DESCRIPTOR.full_name,
            "message": MessageToDict(proto, preserving_proto_field_name=True),
        }
    if hasattr(value, "item") and callable(value.item):  # a numpy or torch scalar
        return value.item()
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(item) for item in value]
    if isinstance(value, dict) and "__entity__" in value:
        import mlflow.entities
        from google.protobuf import symbol_database
        from google.protobuf.json_format import ParseDict

        if not value["__proto__"].startswith("mlflow."):  # only mlflow's own messages are ever rebuilt
            raise ValueError(f"unexpected message type {value['__proto__']}")
        proto_type = symbol_database.Default().GetSymbol(value["__proto__"])
        entity = getattr(mlflow.entities, value["__entity__"])
        return entity.from_proto(ParseDict(value["message"], proto_type()))
    if isinstance(value, dict):
        return {key: _decode(item) for key, item in value.items()}
    return value


def pending(folders: list[Path]) -> list[Path]:
    """Queued entries of `folders`, oldest first (names start with the time they were queued)."""
    entries = [path for folder in folders if folder.is_dir() for path in folder.glob("*.json")]
    return sorted(entries, key=lambda path: path.name)


def outboxes(store_root: Path) -> list[Path]:
    """Every outbox of a recipe's work folder: the run's own and each stage's."""
    return [store_root / OUTBOX, *sorted(store_root.glob(f"*/{OUTBOX}"))]


def send_outboxes(client, folders: list[Path], report: Callable[[str], None] | None = None) -> tuple[int, int]:
    """Send the queued calls of `folders` in order through the plain `client`; returns (sent, rejected).

    A sent entry is deleted; one the server refuses (its run deleted meanwhile, say) is moved to `rejected/` beside
    it and reported; a server that stops answering raises `TrackingUnavailable` with the rest kept."""
    sent = rejected = 0
    for entry in pending(folders):
        call = json.loads(entry.read_text(encoding="utf-8"))
        files = entry.with_suffix(".files")
        try:
            getattr(client, call["method"])(*_decode(call["args"]), **_decode(call["kwargs"]))
        except Exception as error:
            if is_unreachable(error):
                raise TrackingUnavailable(
                    f"MLflow tracking server stopped answering while sending {entry.parent}; the rest is kept there"
                ) from None
            aside = entry.parent / "rejected"
            aside.mkdir(exist_ok=True)
            os.replace(entry, aside / entry.name)
            if files.exists():
                os.replace(files, aside / files.name)
            rejected += 1
            if report is not None and rejected <= 3:  # the first few say why; the count says how many
                report(f"{entry}: the server refused {call['method']} ({str(error).splitlines()[0][:200]})")
            continue
        entry.unlink()
        shutil.rmtree(files, ignore_errors=True)
        sent += 1
    return sent, rejected


def send_kept(client, store_root: Path, report: Callable[[str], None]) -> int:
    """Send what earlier runs of this recipe kept (`outboxes`); report the count and any refused call."""
    sent, rejected = send_outboxes(client, outboxes(store_root), report)
    if sent or rejected:
        refused = f"; {rejected} refused, kept in rejected/" if rejected else ""
        report(f"sent {sent} tracking calls kept while the server was away{refused}")
    return sent
