"""An LLM jury: each candidate is scored 0-10 by one or more models behind OpenAI-compatible chat-completions
endpoints, reading a rubric written for the record's suite kind, and the jurors' scores are aggregated.

Why it is built this way:
- a judge that cannot be reached is a configuration fault, found before the policy spends minutes sampling:
  `check()` asks every endpoint for its model list first and stops with one line naming the URL;
- a judge that answers badly is a fact about that answer: it is never turned into a score. An answer that is not
  JSON, has no numeric `score`, or is out of range makes the candidate unjudgeable (None), counted per reason
  (`unjudgeable`), as is a request that still fails after its retries;
- the API key is read from the environment variable the config names, only when a request is made; the config,
  the stage's params, its artifacts and every message hold the variable's name, never its value.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import statistics
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, wait
from enum import StrEnum
from pathlib import Path
from string import Template
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from workbench.api.config import StrictModel
from workbench.api.markers import DataFolder
from workbench.errors import StageError
from workbench.preference.judges import RUBRICS_DIR, Candidate, Judge, scoring_kinds

SCALE = (0, 10)
"""The range of one juror's score; the rubrics ask for an integer in it."""

SCORE_SCHEMA = {
    "type": "object",
    "properties": {"score": {"type": "integer", "enum": list(range(SCALE[0], SCALE[1] + 1))}},
    "required": ["score"],
}
"""The answer's JSON Schema, sent when `response_format` asks for schema-constrained output."""

RUBRIC_KINDS = ("instruction_following", "json_schema", "tool_use", "default")
"""One rubric file `<kind>.md` each; `rubric_kind` picks one per record, as the verifiers pick their checkers."""

RUBRIC_FIELDS = ("conversation", "tools", "response", "instructions", "schema", "gold_calls")
"""The `$name` placeholders a rubric may use."""

# Upper case, as environment variables are named: most API keys hold lower-case letters, so one pasted here is refused.
ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]{0,63}")
# What an HTTP header value can carry: printable ASCII without spaces (a key read from a CRLF file ends in "\r").
KEY_CHARACTERS = re.compile(r"[\x21-\x7e]+")

REASONS = ("request_failed", "not_json", "no_score", "out_of_range")
"""Why one juror's answer gave no score (the keys of `LlmJury.unjudgeable`)."""


class Aggregation(StrEnum):
    """How the jurors' scores of one candidate become its score."""

    MEAN = "mean"
    MEDIAN = "median"
    MAJORITY = "majority"

    def combine(self, scores: list[float], pass_mark: float) -> float:
        """mean / median: of the jurors' 0-10 scores; majority: the share of jurors whose score is >= `pass_mark`
        (0 to 1: 1 = every juror passes it; > 0.5 = a majority does)."""
        if self is Aggregation.MEAN:
            return statistics.fmean(scores)
        if self is Aggregation.MEDIAN:
            return float(statistics.median(scores))
        return sum(score >= pass_mark for score in scores) / len(scores)

    def scale(self) -> tuple[float, float]:
        """The range of the aggregated score (what `min_score` and `max_rejected_score` are measured in)."""
        return (0.0, 1.0) if self is Aggregation.MAJORITY else (float(SCALE[0]), float(SCALE[1]))


class JurorSettings(StrictModel):
    """One judge model behind an OpenAI-compatible chat-completions endpoint."""

    base_url: str = Field(pattern=r"^https?://\S+$")
    """The API's base URL, up to and including the version: `http://127.0.0.1:8080/v1` (requests go to
    `<base_url>/chat/completions`; the start-up check reads `<base_url>/models`)."""

    model: str = Field(min_length=1)
    """The model name to send; it must be among the endpoint's `/models` when that list is served."""

    api_key_env: str | None = None
    """The NAME of the environment variable holding the API key (sent as `Authorization: Bearer`); the key itself
    is never written in the recipe, the stage's params, its artifacts or its messages. None: no key is sent."""

    @field_validator("api_key_env")
    @classmethod
    def _a_variable_name(cls, value: str | None) -> str | None:
        # The message does not repeat the value: it may be a key pasted where its variable's name belongs.
        if value is not None and not ENV_NAME.fullmatch(value):
            raise ValueError(
                "must be the name of an environment variable (upper-case letters, digits, _), not the key itself"
            )
        return value

    @field_validator("base_url")
    @classmethod
    def _a_plain_endpoint(cls, value: str) -> str:
        # The URL is logged and shown in messages, so it may not carry a credential; and a bad port is a recipe
        # error here, not an exception from the HTTP client in the middle of the stage.
        parts = urlsplit(value)
        if parts.username is not None or parts.password is not None or parts.query:
            raise ValueError("must not hold a user, password or query string (keys go in api_key_env)")
        try:
            _ = parts.port  # urlsplit checks the port's range only when asked for it
        except ValueError:
            raise ValueError("has a port outside 0-65535") from None
        return value


class LlmJudgeSettings(StrictModel):
    """A jury of LLM judges for `judge: llm`: every juror scores every candidate 0-10 with the record's rubric."""

    jury: list[JurorSettings] = Field(min_length=1)
    """The judges; one entry is a single judge."""

    aggregate: Aggregation = Aggregation.MEAN
    """How the jurors' scores combine: `mean` or `median` of the 0-10 scores, or `majority`: the share (0-1) of
    jurors whose score is >= `pass_mark`. A candidate is scored only if every juror gave a valid score."""

    pass_mark: float = Field(default=7.0, ge=SCALE[0], le=SCALE[1])
    """The 0-10 score at which a juror passes a candidate (used by `aggregate: majority`)."""

    rubrics: DataFolder | None = None
    """A folder of rubric files replacing the built-in ones of `evals/judges/` by name (`instruction_following.md`,
    `json_schema.md`, `tool_use.md`, `default.md`; a missing file falls back to the built-in). Hashed."""

    response_format: Literal["none", "json_object", "json_object_schema", "json_schema"] = "json_object"
    """What the request asks of the answer's form: `none` (free text, the first JSON object in it is read),
    `json_object` (JSON mode: OpenAI, vLLM, llama.cpp), `json_object_schema` (JSON mode with the score schema,
    llama.cpp's and Anyscale's form: constrained to `{"score": 0..10}`), `json_schema` (OpenAI's structured
    outputs with the score schema; also vLLM and llama.cpp's C++ server)."""

    temperature: float = Field(default=0.0, ge=0)
    """Judge sampling temperature (0: greedy, the same answer each time where the server is deterministic)."""

    seed: int | None = Field(default=None, ge=0)
    """Sent with every request as `seed`, offset by a number derived from the juror's model and the request's
    text: each question gets its own fixed seed, so a re-run asks the same questions with the same seeds even
    at `temperature` > 0 (on servers that honour `seed`: llama.cpp, vLLM; OpenAI best-effort). None: no seed."""

    max_tokens: int = Field(default=64, ge=1)
    """Longest answer; an answer cut off here is usually not JSON, and counted so."""

    timeout_s: float = Field(default=60.0, gt=0)
    """Per-request timeout (connect and read), seconds."""

    retries: int = Field(default=3, ge=0)
    """Further tries of a request that fails in transport (connect, timeout, protocol) or gets HTTP 408, 429, 500,
    502, 503 or 504 (`RETRIED_STATUS`); any other HTTP error fails the request at once."""

    backoff_s: float = Field(default=1.0, ge=0)
    """Wait before the first retry; doubled before each next one (exponential backoff)."""

    concurrency: int = Field(default=4, ge=1)
    """Requests in flight at once (threads), over all jurors."""


def rubric_kind(candidate: Candidate) -> str:
    """The rubric for the record's scoring fields: the first kind the verifiers would check, else `default`."""
    return next(iter(scoring_kinds(candidate)), "default")


def load_rubrics(folder: Path | None) -> dict[str, Template]:
    """Each kind's rubric template: `folder`'s file if it has one, else the built-in; a placeholder other than
    RUBRIC_FIELDS is a StageError naming the file."""
    rubrics, problems = {}, []
    for kind in RUBRIC_KINDS:
        path = folder / f"{kind}.md" if folder is not None and (folder / f"{kind}.md").is_file() else None
        path = path or RUBRICS_DIR / f"{kind}.md"
        template = Template(path.read_text(encoding="utf-8"))
        try:
            template.substitute(dict.fromkeys(RUBRIC_FIELDS, ""))
        except KeyError as error:
            problems.append(f"{path}: placeholder {error} is not one of ${', $'.join(RUBRIC_FIELDS)}")
        except ValueError as error:
            problems.append(f"{path}: {error} (write $$ for a dollar sign)")
        rubrics[kind] = template
    if problems:
        raise StageError("\n".join(problems))
    return rubrics


def _as_json(value: Any) -> str:
    return "none" if value is None else json.dumps(value, ensure_ascii=False, indent=1)


def render(rubric: Template, candidate: Candidate) -> str:
    """The judge's user message: the rubric with the conversation, the response and the record's scoring fields."""
    record = candidate.record
    conversation = "\n".join(f"[{turn['role']}] {turn.get('content') or ''}" for turn in candidate.prompt)
    instructions = None
    if record.get("instruction_id_list"):
        instructions = [
            {"id": i, "kwargs": k} for i, k in zip(record["instruction_id_list"], record["kwargs"], strict=True)
        ]
    return rubric.substitute(
        conversation=conversation,
        tools=_as_json(candidate.tools),
        response=candidate.response,
        instructions=_as_json(instructions),
        schema=_as_json(record.get("json_schema")),
        gold_calls=_as_json(record.get("tool_calls")),
    )


_OBJECT_START = re.compile(r"\{")


def parse_score(answer: str) -> float | str:
    """The score in a judge's answer, or the reason there is none: `not_json` (no JSON object in it), `no_score`
    (no numeric `score`), `out_of_range`.

    The answer is read as JSON; failing that, the first JSON object inside it (judges often wrap it in prose or a
    code fence). The object's `score` must be a number (not a boolean or a string) within SCALE.
    """
    found = None
    try:
        found = json.loads(answer)
    except ValueError:
        decoder = json.JSONDecoder()
        for match in _OBJECT_START.finditer(answer):
            try:
                found, _ = decoder.raw_decode(answer, match.start())
                break
            except ValueError:
                continue
        else:
            return "not_json"
    if not isinstance(found, dict):
        return "not_json"
    score = found.get("score")
    if isinstance(score, bool) or not isinstance(score, int | float):
        return "no_score"
    if not SCALE[0] <= score <= SCALE[1]:
        return "out_of_range"
    return float(score)


def _response_format(kind: str) -> dict[str, Any] | None:
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_object_schema":
        return {"type": "json_object", "schema": SCORE_SCHEMA}
    if kind == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": "score", "schema": SCORE_SCHEMA, "strict": True}}
    return None


def _request_seed(seed: int, model: str, messages: list[dict[str, str]]) -> int:
    text = json.dumps([model, messages], ensure_ascii=False)
    return (seed + int.from_bytes(hashlib.sha256(text.encode()).digest()[:4])) % 2**31


def _api_key(juror: JurorSettings) -> str:
    """The juror's key, without the surrounding whitespace a `.env` file may leave (empty: no key variable)."""
    return os.environ.get(juror.api_key_env, "").strip() if juror.api_key_env else ""


def _headers(juror: JurorSettings) -> dict[str, str]:
    if juror.api_key_env is None:
        return {}
    return {"Authorization": f"Bearer {_api_key(juror)}"}


def _without_key(text: str, juror: JurorSettings) -> str:
    """`text` (an HTTP client's error, a server's reply) with the juror's key masked, in case either echoes it."""
    key = _api_key(juror)
    return text.replace(key, "***") if key else text


RETRIED_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class LlmJury(Judge):
    """Scores candidates with every juror of `settings` (requests run `concurrency` at a time) and aggregates."""

    def __init__(self, settings: LlmJudgeSettings, rubrics: dict[str, Template]):
        self.settings, self.rubrics = settings, rubrics
        self.unjudgeable: Counter = Counter()
        """Juror answers that gave no score, by reason (REASONS)."""
        self.last_failure: str | None = None
        """The last request failure, for the stage's report (never holds the API key)."""
        self._stop = threading.Event()
        self._client = None  # one connection pool for the whole stage: no new connection (TLS handshake) per batch

    def check(self) -> None:
        """Stop with one line per problem (endpoint down, key variable unset, key refused, model not served)
        before anything is generated."""
        import httpx

        problems = []
        for juror in self.settings.jury:
            key = _api_key(juror)
            if juror.api_key_env is not None and not key:
                problems.append(
                    f"judge {juror.model}: environment variable {juror.api_key_env} (api_key_env) is not set"
                )
                continue
            if juror.api_key_env is not None and not KEY_CHARACTERS.fullmatch(key):
                problems.append(
                    f"judge {juror.model}: environment variable {juror.api_key_env} (api_key_env) holds spaces or "
                    "characters outside printable ASCII, which an HTTP header cannot carry"
                )
                continue
            url = f"{juror.base_url.rstrip('/')}/models"
            try:
                response = httpx.get(url, headers=_headers(juror), timeout=min(self.settings.timeout_s, 10.0))
            except httpx.HTTPError as error:
                reason = _without_key(f"{type(error).__name__}: {error}", juror)
                problems.append(f"judge endpoint {juror.base_url} is not reachable: {reason}")
                continue
            if response.status_code in (401, 403):
                key = (
                    f"the key in ${juror.api_key_env}" if juror.api_key_env else "a request without a key (api_key_env)"
                )
                problems.append(f"judge endpoint {juror.base_url} refused {key} (HTTP {response.status_code})")
            elif response.status_code == 200:
                served = _served_models(response)
                if served is not None and juror.model not in served:
                    problems.append(
                        f"judge endpoint {juror.base_url} does not serve model '{juror.model}' (it serves: "
                        f"{', '.join(served) or 'none'})"
                    )
        if problems:
            raise StageError("\n".join(problems))

    def score(self, candidates: list[Candidate]) -> list[float | None]:
        import httpx

        messages = [[{"role": "user", "content": render(self.rubrics[rubric_kind(c)], c)}] for c in candidates]
        jobs = [(index, juror) for index in range(len(candidates)) for juror in self.settings.jury]
        if self._client is None:
            self._client = httpx.Client(timeout=self.settings.timeout_s)
        client = self._client
        pool = ThreadPoolExecutor(self.settings.concurrency)
        try:
            futures = [pool.submit(self._ask, client, juror, messages[index]) for index, juror in jobs]
            pending = set(futures)
            while pending:  # waits in short slices: a Ctrl-C is only seen when this thread runs Python code
                _, pending = wait(pending, timeout=0.2)
            answers = [future.result() for future in futures]
        except BaseException:
            # Ctrl-C (or a failure): queued questions are dropped and running ones ask no retry, so the stage
            # stops within one request's time instead of waiting out every retry and backoff
            self._stop.set()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
        per_candidate: list[list[float | str]] = [[] for _ in candidates]
        for (index, _), answer in zip(jobs, answers, strict=True):
            per_candidate[index].append(answer)
        scores: list[float | None] = []
        for found in per_candidate:
            reasons = [answer for answer in found if isinstance(answer, str)]
            self.unjudgeable.update(reasons)
            valid = [answer for answer in found if not isinstance(answer, str)]
            scores.append(None if reasons else self.settings.aggregate.combine(valid, self.settings.pass_mark))
        return scores

    def close(self) -> None:
        """Close the connections kept open across batches (the stage calls this once it is done judging)."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def _ask(self, client, juror: JurorSettings, messages: list[dict[str, str]]) -> float | str:
        """One juror's score of one candidate, or the reason it gave none."""
        import httpx

        body: dict[str, Any] = {
            "model": juror.model,
            "messages": messages,
            "temperature": self.settings.temperature,
            "max_tokens": self.settings.max_tokens,
        }
        if self.settings.seed is not None:
            body["seed"] = _request_seed(self.settings.seed, juror.model, messages)
        if (response_format := _response_format(self.settings.response_format)) is not None:
            body["response_format"] = response_format
        url = f"{juror.base_url.rstrip('/')}/chat/completions"
        for attempt in range(self.settings.retries + 1):
            if attempt and self._stop.wait(self.settings.backoff_s * 2 ** (attempt - 1)):
                return "request_failed"
            try:
                response = client.post(url, json=body, headers=_headers(juror))
            except httpx.HTTPError as error:
                self.last_failure = _without_key(f"{url}: {type(error).__name__}: {error}", juror)
                continue
            if response.status_code in RETRIED_STATUS:
                self.last_failure = f"{url}: HTTP {response.status_code}"
                continue
            if response.status_code != 200:
                self.last_failure = _without_key(f"{url}: HTTP {response.status_code}: {response.text[:200]}", juror)
                return "request_failed"
            return _answer_score(response)
        return "request_failed"


def _answer_score(response) -> float | str:
    try:
        content = response.json()["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        return "not_json"
    return parse_score(content or "")


def _served_models(response) -> list[str] | None:
    """The model ids of a `/models` answer, or None when it is not the OpenAI list shape."""
    try:
        return [str(entry["id"]) for entry in response.json()["data"]]
    except (ValueError, KeyError, TypeError):
        return None
