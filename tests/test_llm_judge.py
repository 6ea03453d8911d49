"""The LLM judge against a real OpenAI-compatible server: llama-cpp-python's, serving tiny random LFM2 models
exported to GGUF by the repo's own converter. A random model writes no sensible verdict, so the tests pin what can
be known: free-text answers are unjudgeable and counted by reason, never scored; schema-constrained answers are real
scores in range; a jury aggregates its jurors' real scores; an endpoint that is down stops the stage before
anything is generated; a silent endpoint is retried with backoff under a per-request timeout; the API key travels
only in the request header."""

from __future__ import annotations

import _thread
import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, TINY_ARCH, free_port, write_chat_subset, write_tiny_data
from workbench.errors import StageError
from workbench.preference.judges import Candidate
from workbench.preference.llm_judge import (
    REASONS,
    Aggregation,
    JurorSettings,
    LlmJudgeSettings,
    LlmJury,
    load_rubrics,
    parse_score,
    rubric_kind,
)

SECRET = "sk-workbench-test-5f0c1e9a"
"""The API key the test server demands; it must never appear in anything the stage writes or prints."""
KEY_ENV = "WORKBENCH_TEST_JUDGE_KEY"
SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}


def _candidate(response: str, **fields) -> Candidate:
    prompt = [{"role": "user", "content": "Give me a person as JSON."}]
    return Candidate({"messages": prompt} | fields, prompt, None, response)


CANDIDATES = [
    _candidate('{"name": "Ada"}', json_schema=SCHEMA),
    _candidate("I cannot do that.", json_schema=SCHEMA),
    _candidate("the cat sleeps", instruction_id_list=["change_case:english_lowercase"], kwargs=[{}]),
    _candidate("Hello there!"),
]


def test_parse_score_reads_json_and_names_each_malformed_answer():
    assert parse_score('{"score": 7}') == 7.0
    assert parse_score('{"score": 7.5, "why": "clear"}') == 7.5
    assert parse_score('Verdict:\n```json\n{"score": 3}\n```') == 3.0
    assert parse_score("seven out of ten") == "not_json"
    assert parse_score('{"score": 7') == "not_json"  # cut off at max_tokens
    assert parse_score("[7]") == "not_json"
    assert parse_score('{"grade": 7}') == "no_score"
    assert parse_score('{"score": "7"}') == "no_score"
    assert parse_score('{"score": true}') == "no_score"
    assert parse_score('{"score": 11}') == "out_of_range"
    assert parse_score('{"score": -1}') == "out_of_range"


def test_aggregations_are_mean_median_and_the_share_of_jurors_who_pass():
    assert Aggregation.MEAN.combine([2, 9, 10], pass_mark=7) == 7.0
    assert Aggregation.MEDIAN.combine([2, 9, 10], pass_mark=7) == 9.0
    assert Aggregation.MAJORITY.combine([2, 9, 10], pass_mark=7) == pytest.approx(2 / 3)
    assert Aggregation.MAJORITY.combine([7, 6], pass_mark=7) == 0.5  # the pass mark itself passes
    assert Aggregation.MAJORITY.scale() == (0.0, 1.0) and Aggregation.MEAN.scale() == (0.0, 10.0)


def test_rubrics_are_picked_by_scoring_fields_and_can_be_replaced(tmp_path):
    assert [rubric_kind(c) for c in CANDIDATES] == ["json_schema", "json_schema", "instruction_following", "default"]
    after_tool = Candidate({"tool_calls": []}, [{"role": "tool", "content": "12:00"}], None, "It is noon.")
    assert rubric_kind(after_tool) == "default"
    (tmp_path / "default.md").write_text('Rate $response for $conversation. Answer {"score": N}.')
    rubrics = load_rubrics(tmp_path)
    assert rubrics["default"].template.startswith("Rate $response") and "$schema" in rubrics["json_schema"].template
    (tmp_path / "tool_use.md").write_text("Rate $reply.")
    with pytest.raises(StageError, match=r"tool_use.md: placeholder 'reply' is not one of \$conversation"):
        load_rubrics(tmp_path)
    (tmp_path / "tool_use.md").write_text("Costs $5.")
    with pytest.raises(StageError, match=r"tool_use.md: Invalid placeholder .* \(write \$\$ for a dollar sign\)"):
        load_rubrics(tmp_path)


def test_config_errors_name_the_field():
    from pydantic import ValidationError

    from workbench.stages.pairs import PairsStageConfig

    base = {"name": "p", "kind": "pairs", "from": "sft", "data": "d.jsonl", "judge": "llm"}
    jury = {"jury": [{"base_url": "http://127.0.0.1:1/v1", "model": "m"}], "aggregate": "majority"}
    with pytest.raises(ValidationError, match="'llm_judge' .* is needed with judge: llm"):
        PairsStageConfig.model_validate(base)
    with pytest.raises(ValidationError, match=r"min_score 7 is outside the jury's scale 0-1 \(aggregate: majority\)"):
        PairsStageConfig.model_validate(base | {"llm_judge": jury, "min_score": 7})
    with pytest.raises(ValidationError, match=r"min_gap 2 is wider than the jury's scale 0-1 \(aggregate: majority\)"):
        PairsStageConfig.model_validate(base | {"llm_judge": jury, "min_gap": 2})
    for pasted in ("sk-pasted-key", "hf_pAsTeDkEy0123456789"):
        with pytest.raises(ValidationError, match="not the key itself"):
            JurorSettings(base_url="http://x/v1", model="m", api_key_env=pasted)
    assert PairsStageConfig.model_validate(base | {"llm_judge": jury, "min_score": 0.5}).thresholds().min_score == 0.5


# ---- a real server -------------------------------------------------------------------------------------------------


def _gguf(folder: Path, tokenizer, seed: int) -> Path:
    from workbench.modeling.architecture import build_model

    model_dir = folder / f"judge-{seed}"
    build_model(TINY_ARCH | {"max_position_embeddings": 4096}, tokenizer, seed=seed).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    out = folder / f"judge-{seed}.gguf"
    command = [sys.executable, "-m", "workbench.export.convert", str(model_dir), str(out), "--quantization", "f32"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return out


@pytest.fixture(scope="module")
def judge_server(tmp_path_factory):
    """llama-cpp-python's OpenAI-compatible server on a free port of 127.0.0.1, serving two tiny random judges
    (`judge-a`, `judge-b`: the same tokenizer, different weights) and demanding the API key SECRET; yields its
    base URL."""
    from workbench.modeling.chat_template import LFM2_CHAT_TEMPLATE
    from workbench.modeling.tokenizer import train_bpe_tokenizer

    folder = tmp_path_factory.mktemp("judge-server")
    texts = [p.read_text() for p in sorted((REPO / "evals/judges").glob("*.md"))] * 4
    texts += (REPO / "datasets/quickstart/sft.jsonl").read_text().splitlines()[:200]
    tokenizer = train_bpe_tokenizer(texts, 1024, LFM2_CHAT_TEMPLATE)
    models = [
        {"model": str(_gguf(folder, tokenizer, seed)), "model_alias": alias, "n_ctx": 4096, "n_threads": 1,
         "n_batch": 512, "verbose": False}
        for seed, alias in ((0, "judge-a"), (1, "judge-b"))
    ]  # fmt: skip
    port = free_port()
    config = {"host": "127.0.0.1", "port": port, "api_key": SECRET, "interrupt_requests": False, "models": models}
    (folder / "server.json").write_text(json.dumps(config))
    log = (folder / "server.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--config_file", str(folder / "server.json")],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1"
    request = urllib.request.Request(f"{url}/models", headers={"Authorization": f"Bearer {SECRET}"})
    deadline = time.time() + 120
    while True:
        try:
            with urllib.request.urlopen(request, timeout=2):
                break
        except OSError:
            if process.poll() is not None or time.time() > deadline:
                process.kill()
                process.wait()
                log.close()
                pytest.fail(f"llama_cpp.server did not start:\n{(folder / 'server.log').read_text()[-3000:]}")
            time.sleep(0.3)
    yield url
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:  # never leave the server running past the session
        process.kill()
        process.wait()
    log.close()


def _jury(url: str, models=("judge-a",), **settings) -> LlmJury:
    jurors = [JurorSettings(base_url=url, model=model, api_key_env=KEY_ENV) for model in models]
    return LlmJury(LlmJudgeSettings(jury=jurors, **settings), load_rubrics(None))


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)


@pytest.mark.slow
def test_schema_constrained_answers_are_real_scores(judge_server, key):
    jury = _jury(judge_server, response_format="json_object_schema", max_tokens=32)
    jury.check()
    scores = jury.score(CANDIDATES)
    assert all(isinstance(s, float) and 0 <= s <= 10 and s == int(s) for s in scores), scores
    assert jury.unjudgeable == {}
    assert jury.score(CANDIDATES) == scores  # greedy: the same answers again


@pytest.mark.slow
def test_free_text_answers_of_a_random_model_are_unjudgeable_not_scored(judge_server, key):
    jury = _jury(judge_server, response_format="none", max_tokens=16, concurrency=2)
    assert jury.score(CANDIDATES) == [None] * len(CANDIDATES)
    assert sum(jury.unjudgeable.values()) == len(CANDIDATES)
    assert set(jury.unjudgeable) <= set(REASONS) - {"request_failed"}, jury.unjudgeable


@pytest.mark.slow
def test_json_mode_answers_without_a_score_are_counted_as_such(judge_server, key):
    jury = _jury(judge_server, response_format="json_object", max_tokens=32)
    assert jury.score(CANDIDATES) == [None] * len(CANDIDATES)
    assert jury.unjudgeable["no_score"] >= 1 and sum(jury.unjudgeable.values()) == len(CANDIDATES), jury.unjudgeable


@pytest.mark.slow
def test_seeded_sampling_judges_answer_the_same_question_the_same_way(judge_server, key):
    def scores(seed: int) -> list[float | None]:
        jury = _jury(judge_server, response_format="json_object_schema", temperature=2.0, seed=seed)
        return jury.score(CANDIDATES)

    first = scores(0)
    assert first == scores(0) and None not in first
    assert len(set(first)) > 1  # each question has its own seed, so sampled answers differ between candidates


@pytest.mark.slow
def test_a_jury_aggregates_its_jurors_real_scores(judge_server, key):
    def scores(models, aggregate="mean", pass_mark=7.0):
        jury = _jury(judge_server, models, response_format="json_object_schema", temperature=2.0, seed=0,
                     aggregate=aggregate, pass_mark=pass_mark)  # fmt: skip
        return jury.score(CANDIDATES)

    a, b = scores(["judge-a"]), scores(["judge-b"])
    assert a != b  # two different judges
    assert None not in a + b
    trio = ["judge-a", "judge-b", "judge-b"]
    assert scores(trio) == pytest.approx([(x + 2 * y) / 3 for x, y in zip(a, b, strict=True)])
    assert scores(trio, "median") == b
    mark = sorted(a + b)[len(a)]  # a pass mark some jurors reach and some do not
    expected = [((x >= mark) + 2 * (y >= mark)) / 3 for x, y in zip(a, b, strict=True)]
    assert scores(trio, "majority", mark) == pytest.approx(expected)


@pytest.mark.slow
def test_the_key_comes_from_the_named_variable_and_a_wrong_one_is_refused(judge_server, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(StageError, match=f"^judge judge-a: environment variable {KEY_ENV} .* is not set$"):
        _jury(judge_server).check()
    monkeypatch.setenv(KEY_ENV, "sk-wrong")
    with pytest.raises(
        StageError, match=rf"^judge endpoint {judge_server} refused the key in \${KEY_ENV} \(HTTP 401\)$"
    ):
        _jury(judge_server).check()
    bare = LlmJudgeSettings(jury=[{"base_url": judge_server, "model": "judge-a"}])
    with pytest.raises(StageError, match=r"refused a request without a key \(api_key_env\) \(HTTP 401\)$"):
        LlmJury(bare, load_rubrics(None)).check()
    monkeypatch.setenv(KEY_ENV, SECRET + "\r\n")  # as read from a CRLF .env file: sent without the line end
    _jury(judge_server).check()
    monkeypatch.setenv(KEY_ENV, SECRET)
    with pytest.raises(StageError, match=r"does not serve model 'judge-c' \(it serves: judge-a, judge-b\)$"):
        _jury(judge_server, ["judge-c"]).check()


def test_a_key_no_http_header_can_carry_is_one_line_that_does_not_repeat_it(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-two wörds")
    jury = [{"base_url": f"http://127.0.0.1:{free_port()}/v1", "model": "m", "api_key_env": KEY_ENV}]
    with pytest.raises(StageError) as error:
        LlmJury(LlmJudgeSettings(jury=jury), load_rubrics(None)).check()
    assert str(error.value) == (
        f"judge m: environment variable {KEY_ENV} (api_key_env) holds spaces or characters outside printable "
        "ASCII, which an HTTP header cannot carry"
    )


def test_an_endpoint_that_is_down_is_one_line_naming_its_url():
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(StageError) as error:
        LlmJury(LlmJudgeSettings(jury=[{"base_url": url, "model": "m"}]), load_rubrics(None)).check()
    message = str(error.value)
    assert message.startswith(f"judge endpoint {url} is not reachable: ConnectError") and "\n" not in message


@pytest.fixture
def silent_endpoint():
    """A port that accepts connections and never answers; yields (base URL, accepted connections)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    accepted, stop = [], threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1", accepted
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    listener.close()


def test_a_silent_endpoint_is_retried_with_backoff_then_counted_as_failed(silent_endpoint):
    url, accepted = silent_endpoint
    settings = LlmJudgeSettings(jury=[{"base_url": url, "model": "m"}], timeout_s=0.3, retries=2, backoff_s=0.2)
    jury = LlmJury(settings, load_rubrics(None))
    started = time.monotonic()
    assert jury.score(CANDIDATES[:1]) == [None]
    elapsed = time.monotonic() - started
    assert len(accepted) == 3  # the first try and two retries
    assert 3 * 0.3 + 0.2 + 0.4 <= elapsed < 5  # three timeouts and the backoff (0.2 s, then doubled)
    assert jury.unjudgeable == {"request_failed": 1}
    assert jury.last_failure.startswith(f"{url}/chat/completions: ReadTimeout")


def test_concurrency_bounds_the_requests_in_flight(silent_endpoint):
    url, accepted = silent_endpoint

    def timed(concurrency: int) -> float:
        settings = LlmJudgeSettings(jury=[{"base_url": url, "model": "m"}], timeout_s=0.4, retries=0,
                                    concurrency=concurrency)  # fmt: skip
        started = time.monotonic()
        assert LlmJury(settings, load_rubrics(None)).score(CANDIDATES[:3]) == [None] * 3
        return time.monotonic() - started

    one_at_a_time, all_at_once = timed(1), timed(3)
    assert len(accepted) == 6
    assert one_at_a_time >= 3 * 0.4 and all_at_once < one_at_a_time / 2  # three timeouts in a row, or side by side


def test_ctrl_c_stops_scoring_without_waiting_out_the_retries(silent_endpoint):
    url, _ = silent_endpoint
    # Ctrl-C as the CLI meets it: a library an earlier test imported may have put its own SIGINT handler in place
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _interrupted_scoring(url)
    finally:
        signal.signal(signal.SIGINT, previous)


def test_one_connection_serves_every_batch_until_the_jury_is_closed():
    """Batches reuse the jury's connection (no new connection, and no TLS handshake, per batch)."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    connections = []

    class Judge(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive

        def setup(self):
            super().setup()
            connections.append(self.client_address)

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            body = json.dumps({"choices": [{"message": {"content": '{"score": 7}'}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Judge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        jury = LlmJury(LlmJudgeSettings(jury=[{"base_url": url, "model": "m"}], concurrency=1), load_rubrics(None))
        for _ in range(3):
            assert jury.score(CANDIDATES[:2]) == [7.0, 7.0]
        assert len(connections) == 1
        jury.close()
        assert jury.score(CANDIDATES[:1]) == [7.0]
        assert len(connections) == 2
        jury.close()
    finally:
        server.shutdown()
        server.server_close()


def _interrupted_scoring(url: str) -> None:
    settings = LlmJudgeSettings(jury=[{"base_url": url, "model": "m"}], timeout_s=0.3, retries=3, backoff_s=6)
    jury = LlmJury(settings, load_rubrics(None))
    threading.Timer(0.5, _thread.interrupt_main).start()  # Ctrl-C while the first request waits for its timeout
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        jury.score(CANDIDATES[:3])
    # without the stop, leaving would wait for a retry after 6 s of backoff, and more after it
    assert time.monotonic() - started < 5


# ---- the stage -----------------------------------------------------------------------------------------------------


def _recipe(root: Path, llm_judge: dict, **pairs) -> Path:
    stage = {"name": "pairs", "kind": "pairs", "from": "base", "data": "data/eval.jsonl", "max_prompts": 4,
             "samples": 2, "max_new_tokens": 8, "batch_size": 4, "judge": "llm", "llm_judge": llm_judge} | pairs  # fmt: skip
    recipe = {
        "name": "judged",
        "tokenizer": {"train": {"files": ["data/train.jsonl"], "vocab_size": 400}},
        "stages": [{"name": "base", "kind": "init", "architecture": "arch.yaml"}, stage],
    }
    (root / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    return root / "recipe.yaml"


def _run(path: Path):
    from workbench.runner import load_recipe
    from workbench.runner.executor import run_recipe

    return {outcome.name: outcome for outcome in run_recipe(load_recipe(path))}


@pytest.mark.slow
def test_a_stage_whose_judge_is_down_stops_before_generating(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_tiny_data(tmp_path)
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(StageError, match=f"judge endpoint {url} is not reachable"):
        _run(_recipe(tmp_path, {"jury": [{"base_url": url, "model": "m"}]}))
    assert "sampled" not in capsys.readouterr().out


@pytest.mark.slow
def test_pairs_stage_with_an_llm_jury_keeps_online_and_offline_pairs_by_threshold(
    judge_server, key, tmp_path, monkeypatch, capsys
):
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    write_tiny_data(tmp_path)
    write_chat_subset(REPO / "datasets/quickstart/preference.jsonl", tmp_path / "data/offline.jsonl", 6)
    judge = {"jury": [{"base_url": judge_server, "model": name, "api_key_env": KEY_ENV} for name in ("judge-a", "judge-b")],
             "aggregate": "mean", "response_format": "json_object_schema", "temperature": 2.0, "seed": 0}  # fmt: skip
    thresholds = {"min_score": 7.0, "max_rejected_score": 3.0, "min_gap": 0.5}
    outcome = _run(_recipe(tmp_path, judge, offline_data="data/offline.jsonl", **thresholds))["pairs"]
    printed = capsys.readouterr().out
    info = json.loads((outcome.dir / "stage.json").read_text())
    metrics = info["metrics"]
    written = [json.loads(line) for line in (outcome.dir / "pairs.jsonl").read_text().splitlines()]
    offline = ("unjudgeable", "tie", "under_gap", "under_min_score", "over_max_rejected_score")
    online = ("too_few_answers", *offline)
    assert metrics["pairs/kept"] + sum(metrics[f"pairs/dropped_{why}"] for why in online) == 4
    assert (
        metrics["pairs/offline/kept"] + sum(metrics[f"pairs/offline/dropped_{why}"] for why in (*offline, "reversed"))
        == metrics["pairs/offline/total"]
        == 6
    )
    assert metrics["pairs/written"] == len(written) == metrics["pairs/kept"] + metrics["pairs/offline/kept"]
    assert metrics["pairs/dropped_unjudgeable"] == metrics["pairs/offline/dropped_unjudgeable"] == 0
    by_threshold = sum(metrics[f"pairs{part}/dropped_{why}"] for part in ("", "/offline")
                       for why in ("under_min_score", "over_max_rejected_score"))  # fmt: skip
    assert written and by_threshold > 0  # seeded sampling judges: some pairs pass, some miss a threshold
    for pair in written:
        assert pair["chosen_score"] >= 7 and pair["rejected_score"] <= 3
    assert {pair["origin"] for pair in written} <= {"offline", "semi_online"}
    assert "pairs/offline/kept" in printed and "pairs/dropped_under_min_score" in printed
    client = MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    run = client.get_run(info["mlflow_run_id"])
    assert run.data.metrics["pairs/offline/dropped_reversed"] == metrics["pairs/offline/dropped_reversed"]
    assert KEY_ENV in run.data.params["stage.llm_judge.jury"]  # the variable's name, never its value
    # the key is in no param, metric, artifact, stage file or printed line
    assert SECRET not in printed and SECRET not in json.dumps(run.data.params)
    for path in (tmp_path / "runs").rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def test_recipe_errors_for_the_judge_name_and_the_rubrics_folder(tmp_path, monkeypatch):
    from workbench.errors import RecipeError
    from workbench.runner import load_recipe

    monkeypatch.chdir(tmp_path)
    write_tiny_data(tmp_path)
    jury = {"jury": [{"base_url": "http://127.0.0.1:1/v1", "model": "m"}], "rubrics": "no-such-folder"}
    with pytest.raises(RecipeError) as error:
        load_recipe(_recipe(tmp_path, jury, judge="llmm"))
    message = str(error.value)
    assert "unknown judge 'llmm'" in message
    assert "no-such-folder" in message
