"""Connect to an Argilla server with errors that name the URL and say what to do."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from workbench.errors import WorkbenchError, first_line

if TYPE_CHECKING:
    import argilla as rg

DEFAULT_API_URL = "http://127.0.0.1:6900"


class AnnotationError(WorkbenchError):
    """Argilla could not be reached, refused the credentials, or holds data workbench cannot use."""


def api_url(url: str | None = None) -> str:
    return (url or os.environ.get("ARGILLA_API_URL") or DEFAULT_API_URL).rstrip("/")


def connect(url: str | None = None, api_key: str | None = None) -> rg.Argilla:
    """An SDK client for `url` (default $ARGILLA_API_URL, else the embedded server's address) and `api_key`
    (default $ARGILLA_API_KEY); checks the credentials once so failures surface here, in one line."""
    import argilla as rg
    import httpx
    from argilla._exceptions._base import ArgillaError

    url = api_url(url)
    key = api_key or os.environ.get("ARGILLA_API_KEY")
    if not key:
        raise AnnotationError(
            f"no Argilla API key for {url}: set ARGILLA_API_KEY (printed by `workbench annotate serve`)"
        )
    try:
        return rg.Argilla(api_url=url, api_key=key, retries=1, timeout=30)
    except httpx.TransportError as error:
        raise AnnotationError(
            f"cannot reach the Argilla server at {url} ({error}); start it with `workbench annotate serve` "
            "or set ARGILLA_API_URL"
        ) from None
    except ArgillaError as error:
        if _status(error) == 401:
            raise AnnotationError(_rejected(url)) from None
        raise AnnotationError(f"Argilla server at {url}: {first_line(error)}") from None


@contextmanager
def server_errors(url: str, task: str, then: str) -> Iterator[None]:
    """Report a failure of the server at `url` while `task` ("push", "pull") runs as one AnnotationError line that
    names the URL and ends with `then` (what was kept, what to do). The SDK lets httpx's transport and some HTTP
    status errors through unwrapped, and a server that dies mid-task raises them from anywhere in it."""
    import httpx
    from argilla._exceptions._base import ArgillaError

    try:
        yield
    except (httpx.HTTPError, ArgillaError) as error:
        raise AnnotationError(_describe(url, error, task, then)) from None


def _describe(url: str, error: BaseException, task: str, then: str) -> str:
    import httpx

    cause = next((e for e in _chain(error) if isinstance(e, httpx.TransportError)), None)
    status = _status(error)
    if cause is not None:
        return f"lost the connection to the Argilla server at {url} during the {task} ({first_line(cause)}): {then}"
    if status == 401:
        return _rejected(url)
    if status is not None and status >= 500:
        return f"the Argilla server at {url} failed during the {task} (HTTP {status}): {then}"
    return f"Argilla server at {url}: {first_line(error)}"


def _chain(error: BaseException | None) -> Iterator[BaseException]:
    """`error` and its causes (the SDK wraps an HTTP error in its own, e.g. a 401 in ArgillaCredentialsError)."""
    while error is not None:
        yield error
        error = error.__cause__


def _status(error: BaseException) -> int | None:
    """The HTTP status behind `error`: the SDK's API errors carry `status_code`, httpx's a `response`."""
    for link in _chain(error):
        status = getattr(link, "status_code", None) or getattr(getattr(link, "response", None), "status_code", None)
        if isinstance(status, int):
            return status
    return None


def _rejected(url: str) -> str:
    return f"the Argilla server at {url} rejected the API key: check ARGILLA_API_KEY"
