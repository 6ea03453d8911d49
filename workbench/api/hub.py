"""Hugging Face hub ids as recipes write them: `org/name`, or `org/name@revision` to pin a commit, tag or branch.

The revision is part of the id's text, so it is part of every hash the id enters (a stage on `org/name@v2` is
cached apart from one on `org/name@v1`); loaders get it as `revision=`. An id without one follows the hub's main
branch, as Hugging Face's own loaders do, and its cache entry does not notice a new upload: pin what must not move.
"""

from __future__ import annotations

REVISION_MARK = "@"


def split_revision(location: str) -> tuple[str, str | None]:
    """`org/name@rev` -> (`org/name`, `rev`); a location without a revision -> (location, None)."""
    repo, mark, revision = str(location).partition(REVISION_MARK)
    return (repo, revision) if mark and revision else (str(location), None)
