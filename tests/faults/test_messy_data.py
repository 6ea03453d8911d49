"""Messy data as real exports write it (`tests/faults/messy/`, plus a 10 MB line written here): every record of a
chat, preference or pretraining file reaches the stage's data or its report with the line and a reason; repeats are
used and reported; nothing crashes, and an over-long line is reported without being read whole."""

from __future__ import annotations

import json
import shutil
import time
import tracemalloc
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from rich.console import Console

from workbench.api import Project, StageContext
from workbench.data.chat import REPEATED_RECORD
from workbench.data.records import iter_lines, iter_texts, line_too_long, read_records
from workbench.data.report import publish_report, report_artifact
from workbench.distill.corpus import REPEATED_DOCUMENT, load_corpus, read_documents
from workbench.errors import StageError
from workbench.modeling.chat_template import LFM2_CHAT_TEMPLATE
from workbench.modeling.tokenizer import train_bpe_tokenizer
from workbench.preference.data import REPEATED_PAIR, load_pairs
from workbench.stages.preference import PreferenceStageConfig
from workbench.stages.pretrain import PretrainStageConfig
from workbench.stages.sft import SFTStageConfig
from workbench.tracking import StageTracker
from workbench.training.chat_dataset import load_training_chats
from workbench.training.shared_data import stage_dataset

MESSY = Path(__file__).parent / "messy"
ROLES = "not one of assistant, system, tool, user"
TOO_LONG = f"unreadable: {line_too_long(8 * 2**20)}"
FAST_S = 5.0
"""Reading a file with a 10 MB line, checking and publishing it: tokenizing that line alone takes twice as long."""

CHAT_DROPPED = {
    "unreadable: not UTF-8": [3],
    "with a message whose 'content' is a number, not text": [4],
    "with an empty turn": [5],
    "with an empty 'messages' list": [6],
    f'with an unknown role ("human", {ROLES})': [7],
    f'with an unknown role ("gpt", {ROLES})': [7],
    f'with an unknown role ("bot", {ROLES})': [8],
    "with no assistant turn": [7, 8],
    f'with an unknown role (["user"], {ROLES})': [12],
    "unreadable: invalid JSON (Unterminated string starting at)": [13],
    "unreadable: not valid Unicode (a lone surrogate escape such as \\ud83d)": [14],
    "with a message whose 'content' is a boolean, not text": [15],
    TOO_LONG: [18],
}
CHAT_USED = [1, 2, 9, 10, 11, 17]
"""Line 16 is blank: no record. 9 repeats 2 byte for byte; 10 repeats 1 with an id and its keys reordered."""

PAIRS_DROPPED = {
    "unreadable: not UTF-8": [3],
    "with a 'chosen' that is a number, not text or a list of turns": [4],
    "with a prompt that is a number, not text or a list of turns": [5],
    "with an empty prompt turn": [6],
    f'with a prompt turn of unknown role ("human", {ROLES})': [7],
    "with a response turn that is not a mapping": [8],
    "with a prompt but no 'rejected' response": [10],
    "with a prompt turn whose 'content' is a number, not text": [13],
    "unreadable: invalid JSON (Expecting value)": [15],
    TOO_LONG: [16],
}
PAIRS_USED = [1, 2, 9, 11, 12, 14]
"""9 repeats 1 byte for byte; 14 is 1 again in trl's implicit-prompt form."""

CORPUS_DROPPED = {
    "corpus.txt": {"not UTF-8": [2, 7], "empty": [3, 6], TOO_LONG.removeprefix("unreadable: "): [9]},
    "corpus.jsonl": {
        "with a 'text' that is a number, not a string": [2],
        "with an empty 'text'": [3],
        "not UTF-8": [4],
        "without a string 'text'": [6],
        "invalid JSON (Unterminated string starting at)": [7],
        "empty": [9],
        "not valid Unicode (a lone surrogate escape such as \\ud83d)": [10],
        "not a JSON object": [11],
        TOO_LONG.removeprefix("unreadable: "): [13],
    },
}
CORPUS_USED = {"corpus.txt": [1, 4, 5, 8], "corpus.jsonl": [1, 5, 8, 12]}
"""Line 4 (txt) and line 5 (jsonl) repeat line 1's text."""


def with_10mb_line(tmp_path: Path, name: str) -> Path:
    """The messy file copied into `tmp_path` with a 10 MB line appended: a JSONL record whose one text is 10 MB of
    words (it would parse, and be used or tokenized, if it were read), or 10 MB of words for a text corpus."""
    path = tmp_path / name
    shutil.copyfile(MESSY / name, path)
    words = ("lorem ipsum dolor sit amet " * 400_000)[:10_000_000]
    line = {
        "chat.jsonl": {"messages": [{"role": "user", "content": words}, {"role": "assistant", "content": "ok"}]},
        "pairs.jsonl": {"prompt": words, "chosen": "a", "rejected": "b"},
        "corpus.jsonl": {"text": words},
    }.get(name, words)
    with path.open("ab") as handle:
        handle.write((line if isinstance(line, str) else json.dumps(line)).encode() + b"\n")
    return path


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    """A tokenizer trained as a recipe's `tokenizer.train` trains it, on the messy files themselves."""
    texts = [text for name in ("chat.jsonl", "pairs.jsonl", "corpus.txt", "corpus.jsonl") for text in
             iter_texts(MESSY / name)]  # fmt: skip
    folder = tmp_path_factory.mktemp("tokenizer")
    train_bpe_tokenizer(texts * 4, 400, LFM2_CHAT_TEMPLATE).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def mlflow_client(tmp_path_factory) -> MlflowClient:
    root = tmp_path_factory.mktemp("mlflow")
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'store.db'}")
    client.create_experiment("messy", artifact_location=str(root / "artifacts"))
    return client


def stage_context(tmp_path: Path, config, tokenizer_dir: Path, client: MlflowClient) -> StageContext:
    """What the executor hands a stage: the project rooted at `tmp_path`, a real MLflow run, a recording console."""
    run = client.create_run(client.get_experiment_by_name("messy").experiment_id)
    project = Project(tmp_path, tmp_path / "runs", tmp_path / "runs", "messy", 0, False)
    (tmp_path / "stage.tmp").mkdir()
    tracker = StageTracker(client, run.info.run_id)
    console = Console(record=True, width=400)
    return StageContext(project, config, "0" * 64, tmp_path / "stage.tmp", {}, tokenizer_dir, tracker, console)


def logged(ctx: StageContext, key: str) -> tuple[dict[str, float], str]:
    """The metrics and the data report artifact the stage's MLflow run holds."""
    client, run_id = ctx.tracker.client, ctx.tracker.run_id
    text = Path(client.download_artifacts(run_id, report_artifact(key), str(ctx.tmp_dir))).read_text()
    return client.get_run(run_id).data.metrics, text


def test_chat_records_reach_the_sft_dataset_or_the_report(tmp_path, tokenizer_dir, mlflow_client):
    with_10mb_line(tmp_path, "chat.jsonl")  # read through the stage context, as `sft` reads it
    config = SFTStageConfig(name="sft", kind="sft", model="base", data="chat.jsonl", invalid_records="drop")
    ctx = stage_context(tmp_path, config, tokenizer_dir, mlflow_client)
    start = time.perf_counter()
    chats = load_training_chats(ctx, config.data, ctx.tokenizer(), config.max_length, config.invalid_records,
                                config.overlength, "data/train")  # fmt: skip
    assert time.perf_counter() - start < FAST_S
    assert dict(chats.report.problems) == CHAT_DROPPED
    assert dict(chats.report.notes) == {REPEATED_RECORD: [9, 10]}
    assert chats.report.total == 17 and sorted(chats.report.bad_locations() | set(CHAT_USED)) == [
        line for line in range(1, 19) if line != 16
    ]
    dataset = stage_dataset(ctx, chats.examples, "train")  # what `sft` hands SFTTrainer: tokenized once
    assert len(dataset) == chats.report.total - len(chats.report.bad_locations()) == len(CHAT_USED)
    rows = dict(zip(CHAT_USED, chats.raw, strict=True))  # the conversations as converted and validated
    tokens = dict(zip(CHAT_USED, dataset["input_ids"], strict=True))
    assert rows[9]["messages"] == rows[2]["messages"] and rows[10]["messages"] == rows[1]["messages"]
    assert tokens[9] == tokens[2] and tokens[10] == tokens[1]
    tool_chat = rows[11]["messages"]
    assert [turn["role"] for turn in tool_chat] == ["user", "assistant", "tool", "tool", "assistant"]
    assert tool_chat[1]["content"] == (
        '<|tool_call_start|>[get_weather(city="Paris"), get_weather(city="Oslo")]<|tool_call_end|>'
    )
    assert rows[11]["tools"][0]["function"]["name"] == "get_weather"
    rendered = ctx.tokenizer().apply_chat_template(tool_chat, tools=rows[11]["tools"], tokenize=False)
    assert '<|tool_response_start|>{"sky": "rain"}<|tool_response_end|>' in rendered
    assert ctx.tokenizer().decode(tokens[11]) == rendered, "the trainer gets exactly that conversation"

    printed = ctx.console.export_text()
    assert f"chat.jsonl: 2 records {REPEATED_RECORD} (lines 9, 10) — kept" in printed
    assert f"chat.jsonl: 1 record {TOO_LONG} (line 18) — dropped" in printed
    assert "chat.jsonl: using 6 of 17 records" in printed
    metrics, report = logged(ctx, "data/train")
    assert metrics["data/train/used"] == 6 and metrics["data/train/repeating_an_earlier_record"] == 2
    assert "chat.jsonl: 2 records with no assistant turn (lines 7, 8)\n" in report
    assert report.endswith(f"chat.jsonl: 2 records {REPEATED_RECORD} (lines 9, 10) — kept\n")


def test_the_sft_default_stops_on_every_problem_and_not_on_repeats(tmp_path, tokenizer_dir, mlflow_client):
    shutil.copyfile(MESSY / "chat.jsonl", tmp_path / "chat.jsonl")
    config = SFTStageConfig(name="sft", kind="sft", model="base", data="chat.jsonl")
    ctx = stage_context(tmp_path, config, tokenizer_dir, mlflow_client)
    with pytest.raises(StageError) as error:
        load_training_chats(ctx, config.data, ctx.tokenizer(), config.max_length, config.invalid_records,
                            config.overlength, "data/train")  # fmt: skip
    message = str(error.value)
    for problem, lines in CHAT_DROPPED.items():
        if problem != TOO_LONG:
            plural = "s" if len(lines) > 1 else ""
            assert f" {problem} (line{plural} {', '.join(map(str, lines))})" in message
    assert "repeating" not in message and "invalid_records: drop" in message


def test_preference_pairs_reach_the_dataset_or_the_report(tmp_path, tokenizer_dir, mlflow_client):
    path = with_10mb_line(tmp_path, "pairs.jsonl")
    config = PreferenceStageConfig(name="pref", kind="preference", model="base", data="pairs.jsonl",
                                   invalid_records="drop", max_length=512)  # fmt: skip
    ctx = stage_context(tmp_path, config, tokenizer_dir, mlflow_client)
    start = time.perf_counter()
    # what `preference` runs for each source
    pairs = load_pairs(path, config.data, ctx.tokenizer(), config.max_length, config.invalid_records, config.overlength)
    publish_report(ctx, pairs.report, len(pairs.pairs), config.overlength, "data/train", noun="pairs")
    assert time.perf_counter() - start < FAST_S
    assert dict(pairs.report.problems) == PAIRS_DROPPED
    assert dict(pairs.report.notes) == {REPEATED_PAIR: [9, 14]}
    assert [pair.location for pair in pairs.pairs] == PAIRS_USED
    assert pairs.report.total == 16 == len(PAIRS_USED) + len(pairs.report.bad_locations())
    dataset = stage_dataset(ctx, pairs.examples(), "train")
    rows = dict(zip(PAIRS_USED, dataset, strict=True))
    assert rows[14] == rows[9] == rows[1]
    assert [turn["role"] for turn in rows[2]["prompt"]] == ["user", "assistant", "tool", "tool"]
    assert rows[2]["prompt"][1]["content"].startswith('<|tool_call_start|>[get_weather(city="Paris")')
    assert rows[11]["chosen"] == [
        {"role": "assistant", "content": '<|tool_call_start|>[get_weather(city="Rome")]<|tool_call_end|>'}
    ]
    printed = ctx.console.export_text()
    assert f"pairs.jsonl: 2 records {REPEATED_PAIR} (lines 9, 14) — kept" in printed
    assert "pairs.jsonl: using 6 of 16 pairs" in printed
    with pytest.raises(StageError, match=r"with an empty prompt turn \(line 6\)"):  # the default policy
        load_pairs(MESSY / "pairs.jsonl", "pairs.jsonl", ctx.tokenizer(), 512, invalid="error", overlength="drop")


@pytest.mark.parametrize("name", ["corpus.txt", "corpus.jsonl"])
def test_corpus_documents_reach_the_blocks_or_the_report(tmp_path, tokenizer_dir, mlflow_client, name):
    path = with_10mb_line(tmp_path, name)
    start = time.perf_counter()
    documents, report = read_documents(path, name, "text", "difficulty")
    assert time.perf_counter() - start < FAST_S
    assert dict(report.problems) == CORPUS_DROPPED[name]
    assert dict(report.notes) == {REPEATED_DOCUMENT: [CORPUS_USED[name][1]]}
    assert [location for location, _, _ in documents] == CORPUS_USED[name]
    assert report.total == len(documents) + len(report.bad_locations())

    config = PretrainStageConfig(name="pt", kind="pretrain", architecture="a.yaml", corpus=name, seq_len=8)
    ctx = stage_context(tmp_path, config, tokenizer_dir, mlflow_client)
    corpus = load_corpus(ctx, config, config.corpus, ctx.tokenizer(), "data/train")  # what `pretrain` runs
    assert time.perf_counter() - start < 2 * FAST_S
    assert (corpus.info["lines"], corpus.info["documents"]) == (report.total, len(CORPUS_USED[name]))
    printed = ctx.console.export_text()
    assert f"{name}: 1 record {REPEATED_DOCUMENT} (line {CORPUS_USED[name][1]}) — kept" in printed
    assert f"{name}: 1 record {TOO_LONG.removeprefix('unreadable: ')} (line {report.total}) — dropped" in printed
    metrics, _ = logged(ctx, "data/train")
    assert metrics["data/train/repeating_an_earlier_document"] == 1
    assert metrics["data/train/documents"] == len(CORPUS_USED[name])


def test_the_line_limit_counts_the_line_without_its_bom_or_line_end(tmp_path):
    path = tmp_path / "edges.jsonl"
    fits = json.dumps({"text": "x" * 52})  # 64 bytes
    assert len(fits) == 64
    over = json.dumps({"text": "x" * 53})
    path.write_bytes(b"\xef\xbb\xbf" + f"{fits}\r\n{fits}\n{over}\r\n{fits}\r\n{over}".encode())
    assert [(number, raw is not None) for number, raw in iter_lines(path, 64)] == [
        (1, True), (2, True), (3, False), (4, True), (5, False)
    ]  # fmt: skip
    read = read_records(path, max_line_bytes=64)
    assert [record.location for record in read.records] == [1, 2, 4]
    assert read.unreadable == [(3, "line longer than 64 bytes"), (5, "line longer than 64 bytes")]


def test_a_file_without_line_ends_is_never_held_in_memory(tmp_path):
    path = tmp_path / "one_line.jsonl"
    path.write_bytes(b'{"text": "' + b"x" * 32 * 2**20 + b'"}\n{"text": "after"}\n')
    tracemalloc.start()
    try:
        read = read_records(path, max_line_bytes=2**20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert read.unreadable == [(1, "line longer than 1 MiB")]
    assert [record.data for record in read.records] == [{"text": "after"}]
    assert peak < 8 * 2**20, f"{peak / 2**20:.1f} MiB held for a 32 MiB line (limit 1 MiB)"
