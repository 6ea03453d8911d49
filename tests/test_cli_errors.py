"""Every command turns bad input into one `error:` line: no traceback, no hang."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from tests.conftest import TINY_ARCH
from workbench.cli import app


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ARGILLA_API_URL", raising=False)
    monkeypatch.setenv("ARGILLA_API_KEY", "not-a-key")  # so annotate gets as far as the server
    (tmp_path / "not-a-model").mkdir()
    (tmp_path / "not-a-model" / "notes.txt").write_text("no config.json here\n")
    (tmp_path / "d.jsonl").write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    (tmp_path / "unregistered.yaml").write_text(
        "name: r\ntokenizer: {train: {files: [d.jsonl]}}\nstages:\n"
        "  - {name: base, kind: init, architecture: arch.yaml}\n"
        "  - {name: e, kind: evaluate, from: base, suites: [json_schema]}\n"
    )
    (tmp_path / "arch.yaml").write_text(yaml.safe_dump(TINY_ARCH))
    return tmp_path


NOTHING_LISTENS = "http://127.0.0.1:9"

COMMANDS = {
    "plan": (["plan", "missing.yaml"], "missing.yaml: recipe file not found"),
    "run": (["run", "missing.yaml"], "missing.yaml: recipe file not found"),
    "report": (["report", "missing.yaml"], "missing.yaml: recipe file not found"),
    "promote": (["promote", "no-such-model", "--tracking-uri", "sqlite:///{tmp}/m.db"], "no-such-model"),
    "promote recipe": (["promote", "unregistered.yaml"], "unregistered.yaml: the recipe has no evaluate stage with"),
    "path": (["path", "unregistered.yaml", "sft"], "no stage 'sft'"),
    "eval": (["eval", "not-a-model", "--suite", "json_schema", "--limit", "1"], "not-a-model"),
    "merge": (["merge", "nothere.yaml", "out"], "nothere.yaml"),
    "annotate push": (
        ["annotate", "push", "missing.jsonl", "--dataset", "d", "--url", NOTHING_LISTENS],
        "missing.jsonl: pairs file not found",  # the file is read before connecting
    ),
    "annotate pull": (["annotate", "pull", "--dataset", "d", "--url", NOTHING_LISTENS], NOTHING_LISTENS),
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_bad_input_is_one_error_line(workdir, command):
    args, mentioned = COMMANDS[command]
    result = CliRunner().invoke(app, [arg.replace("{tmp}", str(workdir)) for arg in args])
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    assert mentioned in errors[0]
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_debug_adds_the_traceback_to_the_one_error_line(workdir):
    plain = CliRunner().invoke(app, ["plan", "missing.yaml"])
    traced = CliRunner().invoke(app, ["--debug", "plan", "missing.yaml"])
    assert plain.exit_code == traced.exit_code == 1
    assert "Traceback" not in plain.output and "Traceback (most recent call last)" in traced.output
    assert "error: missing.yaml: recipe file not found" in traced.output


def test_eval_data_must_be_suite_equals_file(workdir):
    result = CliRunner().invoke(app, ["eval", "not-a-model", "--suite", "json_schema", "--data", "json_schema"])
    assert result.exit_code == 1 and "error: --data takes SUITE=FILE" in result.output
