"""Preference curation against a real argilla-server (its own venv, SQLite, the SQL search engine)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import httpx
import pytest
import yaml
from conftest import ARGILLA_KEYS, ARGILLA_WORKSPACE, ArgillaServer, free_port

from workbench.annotate.agreement import krippendorff_alpha, percent_agreement
from workbench.annotate.client import AnnotationError, connect
from workbench.annotate.pairs import read_pairs
from workbench.annotate.pull import majority, pull_preferences
from workbench.annotate.push import push_pairs
from workbench.annotate.server import accounts, server_python
from workbench.annotate.source import parse_argilla_uri, resolve_argilla_source
from workbench.errors import StageError

WORKSPACE = ARGILLA_WORKSPACE
KEYS = ARGILLA_KEYS

PAIRS = [
    {"prompt": "Say hi in JSON.", "chosen": '{"greeting": "hi"}', "rejected": "hi", "chosen_score": 1.0,
     "rejected_score": 0.0, "source": "pairs", "model": "tiny"},
    {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}],
     "chosen": "Blue.", "rejected": "Colours are wavelengths of light that ...", "chosen_score": 0.9,
     "rejected_score": 0.2},
    {"prompt": "Call the weather tool for Paris.", "chosen": '{"name": "weather", "arguments": {"city": "Paris"}}',
     "rejected": "It is sunny.", "chosen_score": 1.0, "rejected_score": 0.0},
    {"prompt": "Write one word.", "response_a": "Hello", "response_b": "World"},
]  # fmt: skip


def write_pairs(path, rows) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


# --- pure logic ---------------------------------------------------------------------------------------


def test_read_pairs_reports_every_bad_line_and_counts_duplicates(tmp_path):
    path = tmp_path / "pairs.jsonl"
    write_pairs(path, [PAIRS[0], {"prompt": "x", "chosen": "same", "rejected": "same"}, {"prompt": "", "chosen": "a"}])
    with pytest.raises(StageError) as error:
        read_pairs(path)
    assert "pairs.jsonl:2: the two responses are identical" in str(error.value)
    assert "pairs.jsonl:3:" in str(error.value)
    swapped = {**PAIRS[0], "chosen": PAIRS[0]["rejected"], "rejected": PAIRS[0]["chosen"]}
    write_pairs(path, [PAIRS[0], PAIRS[0], swapped, PAIRS[1]])
    pairs, duplicates = read_pairs(path)
    assert len(pairs) == 2 and duplicates == 2  # the same two responses in either order are one pair


def test_read_pairs_order_is_random_but_stable(tmp_path):
    path = tmp_path / "pairs.jsonl"
    rows = [{"prompt": f"p{i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(40)]
    write_pairs(path, rows)
    first, _ = read_pairs(path)
    again, _ = read_pairs(path)
    assert [p.a_origin for p in first] == [p.a_origin for p in again]
    assert 5 < sum(p.a_origin == "chosen" for p in first) < 35
    for pair, row in zip(first, rows, strict=True):
        a_text = row["chosen"] if pair.a_origin == "chosen" else row["rejected"]
        assert pair.response_a == a_text


def test_read_pairs_refuses_what_the_preference_stage_would(tmp_path):
    """A role the preference stage rejects (after pulling) is refused at push time, with its file:line."""
    from workbench.preference.data import normalize_pair

    path = tmp_path / "pairs.jsonl"
    human = {"prompt": [{"role": "human", "content": "Name a colour."}], "chosen": "Blue.", "rejected": "Colours."}
    write_pairs(path, [PAIRS[0], human, PAIRS[1]])
    _, stage_problems = normalize_pair(2, human)
    assert stage_problems, "the preference stage's own reader refuses the role"
    with pytest.raises(StageError) as error:
        read_pairs(path)
    message = str(error.value)
    assert message.startswith("1 invalid pair line(s):")
    assert f"pairs.jsonl:2: the preference stage would refuse a pair {stage_problems[0]}" in message
    assert "unknown role" in message


def test_read_pairs_reports_undecodable_and_non_object_lines(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(json.dumps(PAIRS[0]).encode() + b"\n[1, 2]\n{broken\n\n\xff\n")
    with pytest.raises(StageError) as error:
        read_pairs(path)
    message = str(error.value)
    assert "3 invalid pair line(s)" in message
    for where in ("pairs.jsonl:2: not a JSON object", "pairs.jsonl:3: invalid JSON", "pairs.jsonl:5: not UTF-8"):
        assert where in message


def test_majority_and_agreement():
    assert majority(["a", "a", "b"]) == "a"
    assert majority(["a", "b"]) is None
    assert majority(["tie", "tie"]) == "tie"
    assert percent_agreement([["a", "a"], ["a", "b"], ["b", "b", "b"]]) == pytest.approx(4 / 5)
    # 2 coders, 10 units, 5 disagreeing units: observed disagreement D_o = 10 / 20 pairable values;
    # expected D_e = 1 - sum n_c (n_c - 1) / (n (n - 1)) over the label totals n_c (alpha = 0.391).
    coder_1 = "a a b b d c c c e d".split()
    coder_2 = "a b b b d d d d e e".split()
    counts = {"a": 3, "b": 5, "c": 3, "d": 6, "e": 3}
    expected_disagreement = 1 - sum(n * (n - 1) for n in counts.values()) / (20 * 19)
    reference = 1 - (10 / 20) / expected_disagreement
    alpha = krippendorff_alpha({"c1": dict(enumerate(coder_1)), "c2": dict(enumerate(coder_2))})
    assert alpha == pytest.approx(reference)
    assert krippendorff_alpha({"c1": {1: "a"}, "c2": {1: "a"}}) is None


def test_missing_server_venv_says_run_setup(tmp_path):
    with pytest.raises(AnnotationError, match="run scripts/setup.sh"):
        server_python(tmp_path / "no-venv")


def test_argilla_uri():
    assert parse_argilla_uri("argilla://team/prefs") == ("team", "prefs")
    with pytest.raises(StageError, match="argilla://WORKSPACE/DATASET"):
        parse_argilla_uri("argilla://only-one")


def test_secrets_come_from_the_environment_or_are_generated(monkeypatch):
    monkeypatch.setenv("ARGILLA_API_KEY", "from-env-key-123")
    monkeypatch.setenv("ARGILLA_PASSWORD_ALICE", "alice-password")
    owner, alice, bob = accounts("owner", ["alice", "bob"])
    assert owner.api_key == "from-env-key-123" and owner.generated  # its password was generated
    assert alice.password == "alice-password" and alice.generated  # its API key was generated
    assert len(bob.api_key) >= 24 and bob.api_key != alice.api_key


# --- against the real server ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def argilla(tmp_path_factory):
    """A real argilla-server on a free port with a temporary SQLite database; yields its URL."""
    server = ArgillaServer(tmp_path_factory.mktemp("argilla")).start()
    yield server.url
    server.stop()
    assert not server.running()


def http(url: str, user: str) -> httpx.Client:
    return httpx.Client(base_url=f"{url}/api/v1", headers={"X-Argilla-Api-Key": KEYS[user]}, timeout=30)


def dataset_id(url: str, name: str) -> str:
    return str(connect(url, KEYS["owner"]).datasets(name=name, workspace=WORKSPACE).id)


def search(client: httpx.Client, dataset: str, body: dict, **params) -> dict:
    response = client.post(f"/me/datasets/{dataset}/records/search", json=body, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def pending_filter() -> dict:
    return {"filters": {"and": [{"type": "terms", "scope": {"entity": "response", "property": "status"},
                                 "values": ["pending"]}]}}  # fmt: skip


def answer_queue(url: str, user: str, dataset: str, choose) -> int:
    """Answer every record in `user`'s pending queue as the UI does: search, then POST a response."""
    answered = 0
    with http(url, user) as client:
        for item in search(client, dataset, pending_filter(), limit=50)["items"]:
            record = item["record"]
            label = choose(record)
            body = {"values": {"preference": {"value": label}}, "status": "submitted"}
            if label in ("a", "b"):
                body["values"]["rationale"] = {"value": f"{user} prefers {label}"}
            response = client.post(f"/records/{record['id']}/responses", json=body)
            assert response.status_code == 201, response.text
            answered += 1
    return answered


def chooser(prefer: dict[str, str]):
    """Pick by content: `prefer` maps a substring of the prompt to 'chosen', 'rejected', 'tie' or 'both_bad'."""

    def choose(record: dict) -> str:
        prompt = record["fields"]["prompt"][-1]["content"]
        want = next(value for key, value in prefer.items() if key in prompt)
        if want in ("tie", "both_bad"):
            return want
        good = next(row for row in PAIRS if key_in(row, prompt))
        text = good.get(want) or good["response_a"]
        return "a" if record["fields"]["response_a"] == text else "b"

    return choose


def key_in(row: dict, prompt: str) -> bool:
    text = row["prompt"] if isinstance(row["prompt"], str) else row["prompt"][-1]["content"]
    return text == prompt


@pytest.mark.slow
def test_push_annotate_pull_round_trip(argilla, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    write_pairs(pairs, PAIRS)
    owner = connect(argilla, KEYS["owner"])
    sent = []
    report = push_pairs(owner, pairs, WORKSPACE, "round-trip", min_submitted=2, progress=lambda *n: sent.append(n))
    assert (report.created, report.added, report.already_present, report.min_submitted) == (True, 4, 0, 2)
    assert sent == [(4, 4)]  # one batch
    again = push_pairs(owner, pairs, WORKSPACE, "round-trip")
    assert (again.created, again.added, again.already_present) == (False, 0, 4)
    dataset = dataset_id(argilla, "round-trip")
    assert len(list(owner.datasets(name="round-trip", workspace=WORKSPACE).records)) == 4

    # alice and bob agree on two pairs, disagree on the colour pair, call "one word" a tie
    assert (
        answer_queue(
            argilla,
            "alice",
            dataset,
            chooser({"JSON": "chosen", "colour": "chosen", "weather": "chosen", "one word": "tie"}),
        )
        == 4
    )
    out = tmp_path / "datasets"
    partial = pull_preferences(owner, WORKSPACE, "round-trip", out)
    assert partial.metrics["incomplete"] == 4 and partial.metrics["pairs"] == 0  # each needs 2 answers
    assert (
        answer_queue(
            argilla,
            "bob",
            dataset,
            chooser({"JSON": "chosen", "colour": "rejected", "weather": "chosen", "one word": "tie"}),
        )
        == 4
    )
    with http(argilla, "bob") as bob:
        assert search(bob, dataset, pending_filter())["total"] == 0

    result = pull_preferences(owner, WORKSPACE, "round-trip", out)
    metrics = result.metrics
    assert (metrics["pairs"], metrics["undecided"], metrics["ties"], metrics["incomplete"]) == (2, 1, 1, 0)
    assert metrics["annotators"] == 2 and metrics["percent_agreement"] == pytest.approx(3 / 4)
    assert -1 <= metrics["krippendorff_alpha"] < 1
    rows = [json.loads(line) for line in (result.path / "preferences.jsonl").read_text().splitlines()]
    by_prompt = {row["prompt"][-1]["content"]: row for row in rows}
    assert set(by_prompt) == {"Say hi in JSON.", "Call the weather tool for Paris."}
    for prompt, row in by_prompt.items():
        source = next(r for r in PAIRS if key_in(r, prompt))
        assert (row["chosen"], row["rejected"]) == (source["chosen"], source["rejected"])
    provenance = json.loads((result.path / "provenance.json").read_text())
    assert provenance["annotators"] == ["alice", "bob"]
    assert provenance["argilla_dataset_id"] == dataset
    import datasets

    assert datasets.load_from_disk(str(result.path / "hf"))["chosen"] == [row["chosen"] for row in rows]

    # no new annotations: same hash, same folder; the stage-facing resolver agrees
    assert pull_preferences(owner, WORKSPACE, "round-trip", out).content_hash == result.content_hash
    with pytest.MonkeyPatch.context() as env:
        env.setenv("ARGILLA_API_URL", argilla)
        env.setenv("ARGILLA_API_KEY", KEYS["owner"])
        source = resolve_argilla_source("argilla://preference/round-trip", tmp_path / "work")
    assert source.content_hash == result.content_hash and source.metrics["pairs"] == 2
    assert source.path.read_bytes() == (result.path / "preferences.jsonl").read_bytes()


@pytest.mark.slow
def test_new_annotations_make_a_new_version(argilla, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    write_pairs(pairs, PAIRS[:2])
    owner = connect(argilla, KEYS["owner"])
    push_pairs(owner, pairs, WORKSPACE, "versions", min_submitted=1)
    dataset = dataset_id(argilla, "versions")
    answer_queue(argilla, "alice", dataset, chooser({"JSON": "chosen", "colour": "both_bad"}))
    first = pull_preferences(owner, WORKSPACE, "versions", tmp_path)
    assert (first.metrics["pairs"], first.metrics["both_bad"]) == (1, 1)
    write_pairs(pairs, PAIRS[:3])
    assert push_pairs(owner, pairs, WORKSPACE, "versions").added == 1
    answer_queue(argilla, "alice", dataset, chooser({"weather": "chosen"}))
    second = pull_preferences(owner, WORKSPACE, "versions", tmp_path)
    assert second.metrics["pairs"] == 2 and second.content_hash != first.content_hash
    assert first.path.is_dir() and second.path.is_dir()  # the earlier version is kept


@pytest.mark.slow
def test_server_down_names_the_url():
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(AnnotationError, match=f"cannot reach the Argilla server at {url}"):
        connect(url, "some-key-123456")


@pytest.mark.slow
def test_wrong_api_key_is_a_clear_error(argilla):
    with pytest.raises(AnnotationError, match=f"server at {argilla} rejected the API key"):
        connect(argilla, "not-a-real-key-123")


@pytest.mark.slow
def test_cli_push_and_pull(argilla, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    write_pairs(pairs, PAIRS[:1])
    env = {"ARGILLA_API_URL": argilla, "ARGILLA_API_KEY": KEYS["owner"], "PATH": "/usr/bin:/bin"}
    env |= {k: v for k, v in os.environ.items() if k == "PYTHONPATH"}  # a checkout other than the installed one
    cli = [str(__import__("pathlib").Path(sys.executable).with_name("workbench")), "annotate"]
    pushed = subprocess.run([*cli, "push", str(pairs), "--dataset", "cli", "--min-submitted", "1"],
                            env=env, capture_output=True, text=True)  # fmt: skip
    assert pushed.returncode == 0, pushed.stderr
    assert "1 added, 0 already present" in pushed.stdout
    answer_queue(argilla, "bob", dataset_id(argilla, "cli"), chooser({"JSON": "chosen"}))
    pulled = subprocess.run([*cli, "pull", "--dataset", "cli", "--out", str(tmp_path / "out")],
                            env=env, capture_output=True, text=True)  # fmt: skip
    assert pulled.returncode == 0, pulled.stderr
    assert "preferences.jsonl" in pulled.stdout
    assert "Saving the dataset" not in pulled.stdout + pulled.stderr  # datasets' own bar is not the pull's output
    bad = subprocess.run([*cli, "pull", "--dataset", "cli"], env={**env, "ARGILLA_API_KEY": "wrong-key-12345"},
                         capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 1 and "rejected the API key" in bad.stderr and "Traceback" not in bad.stderr


# --- contract of the SQL search engine, through the server's HTTP API -----------------------------------
# An argilla-server upgrade that changes how the engine is called (or what it must return) fails here.


@pytest.fixture(scope="module")
def contract(argilla, tmp_path_factory):
    """A 4-pair dataset (1 answer completes a record); alice submitted one answer and drafted another."""
    pairs_file = tmp_path_factory.mktemp("contract") / "pairs.jsonl"
    write_pairs(pairs_file, PAIRS)
    push_pairs(connect(argilla, KEYS["owner"]), pairs_file, WORKSPACE, "contract", min_submitted=1)
    dataset = dataset_id(argilla, "contract")
    pairs = {pair.key: pair for pair in read_pairs(pairs_file)[0]}
    with http(argilla, "alice") as alice:
        by_prompt = {i["record"]["fields"]["prompt"][-1]["content"]: i["record"]["id"]
                     for i in search(alice, dataset, {}, limit=10)["items"]}  # fmt: skip
        for prompt, status in (("Say hi in JSON.", "submitted"), ("Write one word.", "draft")):
            body = {"values": {"preference": {"value": "a"}}, "status": status}
            assert alice.post(f"/records/{by_prompt[prompt]}/responses", json=body).status_code == 201
    return dataset, pairs


def keys_of(result: dict) -> list[str]:
    return [item["record"]["external_id"] for item in result["items"]]


def terms(scope: dict, *values: str) -> dict:
    return {"filters": {"and": [{"type": "terms", "scope": scope, "values": list(values)}]}}


@pytest.mark.slow
def test_engine_text_query_metadata_and_suggestion_filters(argilla, contract):
    dataset, pairs = contract
    with http(argilla, "owner") as owner:
        hits = search(owner, dataset, {"query": {"text": {"q": "weather PARIS"}}})
        assert [pairs[k].prompt[-1]["content"] for k in keys_of(hits)] == ["Call the weather tool for Paris."]
        assert search(owner, dataset, {"query": {"text": {"q": "weather London"}}})["total"] == 0
        hits = search(owner, dataset, {"query": {"text": {"q": "brief", "field": "prompt"}}})
        assert hits["total"] == 1  # the system message of the chat field is searchable
        hits = search(owner, dataset, terms({"entity": "metadata", "metadata_property": "source"}, "pairs"))
        assert [pairs[k].info.get("source") for k in keys_of(hits)] == ["pairs"]
        scored = {k: p.score_a for k, p in pairs.items() if p.score_a is not None}
        ranged = {"filters": {"and": [{"type": "range", "scope": {"entity": "metadata", "metadata_property": "score_a"},
                                       "ge": 0.5}]}}  # fmt: skip
        assert set(keys_of(search(owner, dataset, ranged))) == {k for k, s in scored.items() if s >= 0.5}
        suggested_a = {k for k, p in pairs.items() if p.score_a is not None and p.score_a > p.score_b}
        scope = {"entity": "suggestion", "question": "preference", "property": "value"}
        assert set(keys_of(search(owner, dataset, terms(scope, "a")))) == suggested_a


@pytest.mark.slow
def test_engine_sort_and_paging(argilla, contract):
    dataset, pairs = contract
    order = {"sort": [{"scope": {"entity": "metadata", "metadata_property": "score_a"}, "order": "desc"}]}
    with http(argilla, "owner") as owner:
        ranked = keys_of(search(owner, dataset, order))
        first, second = (
            search(owner, dataset, order, limit=2, offset=0),
            search(owner, dataset, order, limit=2, offset=2),
        )
    with_score = sorted((k for k in pairs if pairs[k].score_a is not None), key=lambda k: -pairs[k].score_a)
    assert ranked[: len(with_score)] == with_score or [pairs[k].score_a for k in ranked[:3]] == sorted(
        (pairs[k].score_a for k in with_score), reverse=True
    )
    assert pairs[ranked[-1]].score_a is None  # missing values sort last
    assert first["total"] == second["total"] == 4
    assert keys_of(first) + keys_of(second) == ranked


@pytest.mark.slow
def test_engine_response_status_filters(argilla, contract):
    dataset, pairs = contract
    status = {"entity": "response", "property": "status"}
    with http(argilla, "alice") as alice, http(argilla, "bob") as bob:
        pending = keys_of(search(alice, dataset, terms(status, "pending")))
        submitted = keys_of(search(alice, dataset, terms(status, "submitted")))
        draft = keys_of(search(alice, dataset, terms(status, "draft")))
        assert [pairs[k].prompt[-1]["content"] for k in submitted] == ["Say hi in JSON."]
        assert [pairs[k].prompt[-1]["content"] for k in draft] == ["Write one word."]
        assert len(pending) == 2 and not set(pending) & set(submitted + draft)
        assert len(keys_of(search(alice, dataset, terms(status, "pending", "draft")))) == 3
        assert search(bob, dataset, terms(status, "pending"))["total"] == 4  # per user: bob answered nothing
        completed = search(bob, dataset, terms({"entity": "record", "property": "status"}, "completed"))
        assert keys_of(completed) == submitted
        # each annotator gets its own stable shuffle of the queue: ordered by sha1("<user id>:<record id>")
        bob_id = bob.get("/me").json()["id"]
        items = search(bob, dataset, {}, limit=50)["items"]
        ids = [item["record"]["id"] for item in items]
        assert ids == sorted(ids, key=lambda i: hashlib.sha1(f"{bob_id}:{i}".encode()).digest())


@pytest.mark.slow
def test_engine_progress_and_metadata_metrics(argilla, contract):
    dataset, pairs = contract
    with http(argilla, "owner") as owner, http(argilla, "alice") as alice:
        progress = owner.get(f"/datasets/{dataset}/progress").json()
        assert (progress["total"], progress["completed"], progress["pending"]) == (4, 1, 3)
        mine = alice.get(f"/me/datasets/{dataset}/metrics").json()["responses"]
        assert (mine["total"], mine["submitted"], mine["draft"], mine["pending"]) == (4, 1, 1, 2)
        properties = {
            p["name"]: p["id"]
            for p in owner.get(f"/me/datasets/{dataset}/metadata-properties").json()["items"]
            if p["name"] in ("source", "score_a")
        }
        source = owner.get(f"/metadata-properties/{properties['source']}/metrics").json()
        assert source["total"] == 1 and source["values"] == [{"term": "pairs", "count": 1}]
        score = owner.get(f"/metadata-properties/{properties['score_a']}/metrics").json()
        scores = [p.score_a for p in pairs.values() if p.score_a is not None]
        assert (score["min"], score["max"]) == (min(scores), max(scores))


# --- the annotation UI in a real browser --------------------------------------------------------------


def chromium_driver():
    """Headless Debian chromium through its own chromedriver (no browser download); skip when absent."""
    import shutil

    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (browser and driver):
        pytest.skip(
            "needs Debian's chromium and chromium-driver (bash scripts/install-browser.sh installs them from the apt cache)"
        )
    webdriver = pytest.importorskip("selenium.webdriver")
    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(flag)
    options.binary_location = browser
    return webdriver.Chrome(service=webdriver.ChromeService(executable_path=driver), options=options)


@pytest.mark.slow
def test_annotator_ranks_a_pair_in_the_browser_and_the_pull_sees_it(argilla, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as seen
    from selenium.webdriver.support.wait import WebDriverWait

    pairs = tmp_path / "pairs.jsonl"
    unjudged = {key: PAIRS[0][key] for key in ("prompt", "chosen", "rejected")}  # no scores: no pre-filled suggestion
    write_pairs(pairs, [unjudged])
    owner = connect(argilla, KEYS["owner"])
    push_pairs(owner, pairs, WORKSPACE, "browser", min_submitted=1)
    dataset = dataset_id(argilla, "browser")

    browser = chromium_driver()
    wait = WebDriverWait(browser, 60)
    try:
        browser.get(f"{argilla}/sign-in")
        wait.until(seen.presence_of_element_located((By.NAME, "Username"))).send_keys("alice")
        browser.find_element(By.NAME, "Password").send_keys("alice-password")
        browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait.until(lambda b: "/sign-in" not in b.current_url)

        browser.get(f"{argilla}/dataset/{dataset}/annotation-mode")
        wait.until(seen.presence_of_element_located((By.CSS_SELECTOR, "label[for=preference_a]")))
        page = browser.find_element(By.TAG_NAME, "body").text
        # the push shuffles A/B: find the side that shows the JSON answer and prefer it
        side_a = page.split("Response A", 1)[1].split("Response B", 1)[0]
        better = "a" if PAIRS[0]["chosen"] in side_a else "b"
        assert not browser.find_element(By.ID, f"preference_{better}").is_selected()
        browser.find_element(By.CSS_SELECTOR, f"label[for=preference_{better}]").click()
        browser.find_element(By.CSS_SELECTOR, "[contenteditable=true]").send_keys("valid JSON, as asked")
        submit = wait.until(seen.element_to_be_clickable((By.CSS_SELECTOR, "button.button--submit")))
        submit.click()
        with http(argilla, "alice") as alice:
            wait.until(lambda _: search(alice, dataset, pending_filter())["total"] == 0)
    finally:
        browser.quit()

    result = pull_preferences(owner, WORKSPACE, "browser", tmp_path / "datasets")
    assert result.metrics["pairs"] == 1 and result.provenance["annotators"] == ["alice"]
    row = json.loads((result.path / "preferences.jsonl").read_text())
    assert (row["chosen"], row["rejected"]) == (PAIRS[0]["chosen"], PAIRS[0]["rejected"])


# --- a recipe trains on the pulled annotations ------------------------------------------------------------


@pytest.mark.slow
def test_preference_stage_trains_on_argilla_data_and_new_annotations_retrain(argilla, tiny_project, monkeypatch):
    from workbench.runner import load_recipe
    from workbench.runner.executor import run_recipe

    pairs = tiny_project.root / "candidates.jsonl"
    write_pairs(pairs, PAIRS[:3])
    owner = connect(argilla, KEYS["owner"])
    push_pairs(owner, pairs, WORKSPACE, "recipe-data", min_submitted=1)
    dataset = dataset_id(argilla, "recipe-data")
    prefer_chosen = chooser({"JSON": "chosen", "colour": "chosen", "weather": "chosen"})
    assert answer_queue(argilla, "alice", dataset, prefer_chosen) == 3

    monkeypatch.setenv("ARGILLA_API_URL", argilla)
    monkeypatch.setenv("ARGILLA_API_KEY", KEYS["owner"])
    preference = {"name": "prefs", "kind": "preference", "from": "base", "data": "argilla://preference/recipe-data",
                  "max_length": 192, "max_steps": 2, "batch_size": 2, "learning_rate": 1e-3, "sample_count": 0}  # fmt: skip
    recipe_path = tiny_project({"max_steps": 1})
    recipe = yaml.safe_load(recipe_path.read_text())
    recipe["stages"] = [recipe["stages"][0], preference]  # init -> preference, no SFT needed here
    recipe_path.write_text(yaml.safe_dump(recipe, sort_keys=False))

    def run() -> dict:
        return {outcome.name: outcome for outcome in run_recipe(load_recipe(recipe_path))}

    first = run()
    assert first["prefs"].status == "ran"
    info = json.loads((first["prefs"].dir / "stage.json").read_text())
    client = mlflow_client(tiny_project.root)
    logged = client.get_run(info["mlflow_run_id"]).data.metrics
    assert logged["argilla/pairs"] == 3 and logged["argilla/annotators"] == 1
    assert logged["data/train/used"] == 3

    assert run()["prefs"].status == "cached", "no new annotations: cache hit"

    write_pairs(pairs, PAIRS[:4])  # one more pair, judged by alice: the data hash changes, the stage re-runs
    push_pairs(owner, pairs, WORKSPACE, "recipe-data")
    assert answer_queue(argilla, "alice", dataset, lambda record: "a") == 1
    third = run()
    assert third["prefs"].status == "ran" and third["prefs"].dir != first["prefs"].dir


def mlflow_client(root):
    from mlflow import MlflowClient

    return MlflowClient(f"sqlite:///{root}/runs/mlflow.db")
