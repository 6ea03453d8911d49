"""Turn submitted Argilla judgements into a versioned preference dataset (prompt, chosen, rejected).

A record becomes a pair when its task distribution is complete (enough submitted answers) and a strict
majority of its answers says A or B; ties, both-bad, undecided (no strict majority) and incomplete
records are counted and left out. The dataset is content-addressed: `<out>/<workspace>/<dataset>/<hash>/`
holds `preferences.jsonl`, a Hugging Face datasets folder `hf/` and `provenance.json`. The hash covers
the pairs only, so pulling again with no new annotations finds the same folder and writes nothing;
new annotations make a new version next to the old ones.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.annotate.agreement import krippendorff_alpha, percent_agreement
from workbench.annotate.client import AnnotationError, server_errors
from workbench.annotate.push import PREFERENCE_QUESTION, RATIONALE_QUESTION, get_dataset
from workbench.fsio import build_new_folder, write_json_atomic

if TYPE_CHECKING:
    import argilla as rg

NOT_WRITTEN = "no dataset version was written; pull again once the server is back"


@dataclass(frozen=True)
class Judged:
    """One Argilla record with its submitted answers, by annotator."""

    key: str
    prompt: list[dict[str, str]]
    response_a: str
    response_b: str
    completed: bool
    labels: dict[str, str]
    rationales: dict[str, str]


@dataclass(frozen=True)
class PullResult:
    """Where the pulled dataset is, its content hash and the counts and agreement to log."""

    path: Path
    """The version folder; `preferences.jsonl` inside it is the training data."""
    content_hash: str
    metrics: dict[str, float]
    provenance: dict[str, Any]


def fetch_judged(client: rg.Argilla, workspace: str, name: str) -> tuple[rg.Dataset, list[Judged]]:
    dataset = get_dataset(client, workspace, name)
    if dataset is None:
        raise AnnotationError(f"Argilla dataset {workspace}/{name} not found at {client.api_url}: push pairs first")
    usernames = {str(user.id): user.username for user in client.users}
    judged = []
    for record in _all_records(client, dataset, workspace, name):
        labels, rationales = {}, {}
        for response in record.responses:
            if _plain(response.status) != "submitted":
                continue
            who = usernames.get(str(response.user_id), str(response.user_id))
            if response.question_name == PREFERENCE_QUESTION:
                labels[who] = str(response.value)
            elif response.question_name == RATIONALE_QUESTION and response.value:
                rationales[who] = str(response.value)
        fields = record.fields
        prompt = [{"role": m["role"], "content": m["content"]} for m in _messages(fields["prompt"])]
        judged.append(
            Judged(
                key=str(record.id),
                prompt=prompt,
                response_a=fields["response_a"],
                response_b=fields["response_b"],
                completed=_plain(record.status) == "completed",
                labels=labels,
                rationales=rationales,
            )
        )
    return dataset, judged


def _all_records(client: rg.Argilla, dataset: rg.Dataset, workspace: str, name: str) -> list[rg.Record]:
    """Every record of `dataset`, with its responses. The SDK ends its pages early, with only a warning, when its
    per-page check that the dataset exists gets anything but 200 (a proxy's 502 while the server restarts): a short
    read would be written as a version, so the count is checked against the server's."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Dataset .* does not exist on the server")
        records = list(dataset.records(with_suggestions=False, with_responses=True))
    total = dataset.progress()["total"]
    if len(records) != total:
        raise AnnotationError(
            f"the Argilla server at {client.api_url} sent {len(records)} of the {total} records of {workspace}/{name} "
            f"(it failed or the dataset changed during the pull): {NOT_WRITTEN}"
        )
    return records


def _plain(value: Any) -> str:
    """The SDK's statuses are `(str, Enum)`, whose str() is the member name, not the value."""
    return str(getattr(value, "value", value))


def _messages(chat: Any) -> list[dict]:
    return [m if isinstance(m, dict) else {"role": m.role, "content": m.content} for m in chat]


def majority(labels: list[str]) -> str | None:
    """The label more than half of the answers gave, else None (undecided)."""
    if not labels:
        return None
    label, count = Counter(labels).most_common(1)[0]
    return label if count * 2 > len(labels) else None


def build_preferences(judged: list[Judged]) -> tuple[list[dict], dict[str, float]]:
    rows, counts = [], Counter()
    for record in sorted(judged, key=lambda r: r.key):
        if not record.completed:
            counts["incomplete"] += 1
            continue
        decision = majority(list(record.labels.values()))
        if decision in ("a", "b"):
            chosen, rejected = (
                (record.response_a, record.response_b) if decision == "a" else (record.response_b, record.response_a)
            )
            votes = Counter(record.labels.values())
            rows.append(
                {"prompt": record.prompt, "chosen": chosen, "rejected": rejected, "argilla_id": record.key,
                 "votes": dict(sorted(votes.items()))}
            )  # fmt: skip
            counts["pairs"] += 1
        else:
            counts[{"tie": "ties", "both_bad": "both_bad"}.get(decision, "undecided")] += 1
    by_annotator: dict[str, dict[str, str]] = {}
    for record in judged:
        for who, label in record.labels.items():
            by_annotator.setdefault(who, {})[record.key] = label
    metrics = {
        "records": len(judged),
        "pairs": counts["pairs"],
        "ties": counts["ties"],
        "both_bad": counts["both_bad"],
        "undecided": counts["undecided"],
        "incomplete": counts["incomplete"],
        "submitted_answers": sum(len(r.labels) for r in judged),
        "annotators": len(by_annotator),
    }
    agreement = percent_agreement([list(r.labels.values()) for r in judged])
    alpha = krippendorff_alpha(by_annotator)
    if agreement is not None:
        metrics["percent_agreement"] = agreement
    if alpha is not None:
        metrics["krippendorff_alpha"] = alpha
    return rows, metrics


def pull_preferences(client: rg.Argilla, workspace: str, name: str, out_root: Path) -> PullResult:
    """Fetch every judgement first, then write the version folder whole (or find it already there)."""
    with server_errors(client.api_url, "pull", NOT_WRITTEN):
        dataset, judged = fetch_judged(client, workspace, name)
    rows, metrics = build_preferences(judged)
    payload = "".join(json.dumps(row, sort_keys=True, ensure_ascii=False) + "\n" for row in rows).encode()
    content_hash = hashlib.sha256(payload).hexdigest()
    target = out_root / workspace / name / content_hash[:16]
    provenance = {
        "argilla_url": client.api_url,
        "argilla_dataset_id": str(dataset.id),
        "workspace": workspace,
        "dataset": name,
        "pulled_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "annotators": sorted({who for r in judged for who in r.labels}),
        "content_hash": content_hash,
        "metrics": metrics,
    }
    if not target.exists():
        _write_version(target, payload, rows, provenance)
    else:
        provenance = json.loads((target / "provenance.json").read_text())
    return PullResult(path=target, content_hash=content_hash, metrics=metrics, provenance=provenance)


def _write_version(target: Path, payload: bytes, rows: list[dict], provenance: dict) -> None:
    """Build the version folder aside and publish it whole; when another pull wrote the same version first
    (same content hash, so the same pairs), its folder is kept and ours discarded."""
    import datasets

    def build(staging: Path) -> None:
        (staging / "preferences.jsonl").write_bytes(payload)
        hf_rows = [{**row, "votes": json.dumps(row["votes"], sort_keys=True)} for row in rows]
        features = datasets.Features(
            {
                "prompt": [{"role": datasets.Value("string"), "content": datasets.Value("string")}],
                "chosen": datasets.Value("string"),
                "rejected": datasets.Value("string"),
                "argilla_id": datasets.Value("string"),
                "votes": datasets.Value("string"),
            }
        )
        columns = {name: [row[name] for row in hf_rows] for name in features}  # from_list loses columns when empty
        quiet = datasets.are_progress_bars_disabled()
        datasets.disable_progress_bars()  # a "Saving the dataset" bar per pull is noise beside the pull's own lines
        try:
            datasets.Dataset.from_dict(columns, features=features).save_to_disk(str(staging / "hf"))
        finally:
            if not quiet:
                datasets.enable_progress_bars()
        write_json_atomic(staging / "provenance.json", provenance)

    build_new_folder(target, build)
