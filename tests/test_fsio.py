"""Atomic writes: a reader sees the old version or the new one, never half of one, and failures leave no litter."""

from __future__ import annotations

import json
import os

import pytest

from workbench.fsio import (
    atomic_path,
    build_folder,
    build_new_folder,
    publish_folder,
    write_json_atomic,
    write_jsonl_atomic,
)


def siblings(folder) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def test_a_crash_inside_build_folder_keeps_the_old_folder(tmp_path):
    final = tmp_path / "out"
    build_folder(final, lambda tmp: (tmp / "model.txt").write_text("old"))

    def crash(tmp):
        (tmp / "model.txt").write_text("half of the new one")
        raise RuntimeError("killed mid-build")

    with pytest.raises(RuntimeError, match="killed mid-build"):
        build_folder(final, crash)
    assert (final / "model.txt").read_text() == "old"
    assert siblings(tmp_path) == ["out"], "no half-built folder at the final path or next to it"


def test_a_crash_on_the_first_build_leaves_nothing(tmp_path):
    def crash(tmp):
        (tmp / "part").write_text("x")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_folder(tmp_path / "out", crash)
    assert siblings(tmp_path) == []


def test_publish_folder_replaces_an_existing_folder_whole(tmp_path):
    final, new = tmp_path / "final", tmp_path / "new"
    final.mkdir()
    (final / "stale.txt").write_text("from the old version")
    new.mkdir()
    (new / "fresh.txt").write_text("new")
    assert publish_folder(new, final) == final
    assert siblings(final) == ["fresh.txt"], "nothing of the old folder is mixed in"
    assert siblings(tmp_path) == ["final"], "the old folder, set aside, is removed"


def test_build_folder_replaces_an_older_build(tmp_path):
    final = tmp_path / "out"
    build_folder(final, lambda tmp: (tmp / "a").write_text("1"))
    build_folder(final, lambda tmp: (tmp / "b").write_text("2"))
    assert siblings(final) == ["b"] and siblings(tmp_path) == ["out"]


def test_build_new_folder_keeps_the_first_writer(tmp_path):
    final = tmp_path / "v1"
    assert build_new_folder(final, lambda tmp: (tmp / "data").write_text("first")) is True
    assert build_new_folder(final, lambda tmp: (tmp / "data").write_text("second")) is False
    assert (final / "data").read_text() == "first"
    assert siblings(tmp_path) == ["v1"], "the losing writer's folder is removed"


def test_write_json_atomic_leaves_no_partial(tmp_path):
    path = tmp_path / "info.json"
    write_json_atomic(path, {"b": 1, "a": [1, 2]})
    write_json_atomic(path, {"c": 3})
    assert json.loads(path.read_text()) == {"c": 3}
    write_jsonl_atomic(tmp_path / "rows.jsonl", [{"x": 1}, {"x": 2}])
    assert (tmp_path / "rows.jsonl").read_text().splitlines() == ['{"x": 1}', '{"x": 2}']
    assert siblings(tmp_path) == ["info.json", "rows.jsonl"]


def test_atomic_path_renames_on_success_and_removes_its_temp_on_failure(tmp_path):
    path = tmp_path / "entry.bin"
    with atomic_path(path) as tmp:
        assert tmp.parent == path.parent and tmp != path
        tmp.write_bytes(b"whole")
    assert path.read_bytes() == b"whole" and siblings(tmp_path) == ["entry.bin"]

    with pytest.raises(OSError, match="disk full"), atomic_path(path, per_process=True) as tmp:
        assert str(os.getpid()) in tmp.name
        tmp.write_bytes(b"half")
        raise OSError("disk full")
    assert path.read_bytes() == b"whole", "the old content stays"
    assert siblings(tmp_path) == ["entry.bin"], "the temporary file is removed"
