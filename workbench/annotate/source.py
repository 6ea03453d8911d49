"""`argilla://WORKSPACE/DATASET` as a stage's data: pull it into a local versioned preference dataset."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from workbench.api.kinds import UriScheme
from workbench.errors import StageError

SCHEME = "argilla://"


class ArgillaSource(NamedTuple):
    """The pulled data for a stage: hash it into the stage's cache key, log `metrics` to its run."""

    path: Path
    """`preferences.jsonl` (one {"prompt": [chat messages], "chosen": str, "rejected": str} per line)."""
    content_hash: str
    """sha256 of the pairs: the same annotations give the same hash."""
    metrics: dict[str, float]
    """Counts (pairs, ties, both_bad, undecided, incomplete, annotators) and agreement."""


def is_argilla_uri(value: str) -> bool:
    return str(value).startswith(SCHEME)


def parse_argilla_uri(uri: str) -> tuple[str, str]:
    parts = uri[len(SCHEME) :].split("/") if is_argilla_uri(uri) else []
    if len(parts) != 2 or not all(parts):
        raise StageError(f"{uri!r}: expected argilla://WORKSPACE/DATASET")
    return parts[0], parts[1]


# One pull per recipe run: the plan pulls (the hash decides caching) and the stage trains on that same version,
# even if annotators submit more in between. `forget_pulls()` starts a new run.
_pulled: dict[tuple[str, str], ArgillaSource] = {}


def forget_pulls() -> None:
    _pulled.clear()


def resolve_argilla_source(uri: str, work_dir: Path) -> ArgillaSource:
    """Pull `uri` from the server at $ARGILLA_API_URL with $ARGILLA_API_KEY into
    `<work_dir>/argilla/<workspace>/<dataset>/<hash>/` and return the JSONL path, hash and metrics."""
    key = (uri, str(Path(work_dir).resolve()))
    if key not in _pulled:
        _pulled[key] = _pull(uri, Path(work_dir))
    return _pulled[key]


def _pull(uri: str, work_dir: Path) -> ArgillaSource:
    from workbench.annotate.client import connect
    from workbench.annotate.pull import pull_preferences

    workspace, name = parse_argilla_uri(uri)
    result = pull_preferences(connect(), workspace, name, work_dir / "argilla")
    if result.metrics["pairs"] == 0:
        raise StageError(f"{uri}: no usable preference pairs yet ({_summary(result.metrics)})")
    return ArgillaSource(result.path / "preferences.jsonl", result.content_hash, result.metrics)


def _summary(metrics: dict[str, float]) -> str:
    keys = ("records", "incomplete", "ties", "both_bad", "undecided")
    return ", ".join(f"{key} {int(metrics[key])}" for key in keys)


def uri_problem(uri: str) -> str | None:
    """The problem with an `argilla://` URI's shape, or None (offline: the server is asked only at plan time)."""
    try:
        parse_argilla_uri(uri)
    except StageError as error:
        return str(error)
    return None


ARGILLA = UriScheme(
    scheme="argilla",
    check=uri_problem,
    digest=lambda uri, work_root: resolve_argilla_source(uri, work_root).content_hash,
    forget=forget_pulls,
)
