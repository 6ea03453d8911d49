"""Connect to an Argilla server with errors that name the URL and say what to do."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from workbench.errors import WorkbenchError

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
        if "Credentials" in str(error):
            raise AnnotationError(f"the Argilla server at {url} rejected the API key: check ARGILLA_API_KEY") from None
        raise AnnotationError(f"Argilla server at {url}: {error}") from None
