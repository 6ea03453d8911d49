"""Create or extend an Argilla dataset designed for pairwise preference, from candidate pairs."""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from workbench.annotate.client import AnnotationError, server_errors
from workbench.annotate.pairs import Pair, read_pairs

if TYPE_CHECKING:
    import argilla as rg

BATCH_SIZE = 256
"""Records per request (the SDK's default): each batch is one transaction on the server."""
PREFERENCE_QUESTION = "preference"
RATIONALE_QUESTION = "rationale"
LABELS = {
    "a": "A is better",
    "b": "B is better",
    "tie": "Tie: both good",
    "both_bad": "Both bad",
}
GUIDELINES = """\
Read the conversation, then the two candidate answers **A** and **B** (their order is random).

- **A is better** / **B is better**: that answer follows the instructions more fully and correctly
  (format, constraints, valid JSON or tool call, facts); the other is worse, even if acceptable.
- **Tie: both good**: both are correct and you cannot prefer one. Used sparingly.
- **Both bad**: neither answer is acceptable. The pair is not used for training.

A pre-selected answer is the automatic judge's guess: check it, do not trust it.
The rationale is optional: one sentence on why helps review disagreements.
"""


@dataclass(frozen=True)
class PushReport:
    """What one push did."""

    dataset_id: str
    created: bool
    """The dataset did not exist before this push."""
    added: int
    already_present: int
    """Pairs already in the dataset (same prompt and responses): not sent again, their answers untouched."""
    duplicate_lines: int
    """Lines of the input that repeated an earlier pair."""
    min_submitted: int
    """Submitted answers each record needs (the dataset's task distribution, kept as it was if it existed)."""


def preference_settings(min_submitted: int) -> rg.Settings:
    import argilla as rg

    return rg.Settings(
        guidelines=GUIDELINES,
        fields=[
            rg.ChatField(name="prompt", title="Conversation"),
            rg.TextField(name="response_a", title="Response A", use_markdown=True),
            rg.TextField(name="response_b", title="Response B", use_markdown=True),
        ],
        questions=[
            rg.LabelQuestion(name=PREFERENCE_QUESTION, title="Which response is better?", labels=LABELS),
            rg.TextQuestion(name=RATIONALE_QUESTION, title="Why? (optional)", required=False),
        ],
        metadata=[
            rg.TermsMetadataProperty(name="source", title="Source stage"),
            rg.TermsMetadataProperty(name="model", title="Model"),
            # The order and the judge's scores would bias annotators: hidden from them.
            rg.TermsMetadataProperty(name="a_origin", title="Response A was", visible_for_annotators=False),
            rg.FloatMetadataProperty(name="score_a", title="Judge score A", visible_for_annotators=False),
            rg.FloatMetadataProperty(name="score_b", title="Judge score B", visible_for_annotators=False),
        ],
        distribution=rg.TaskDistribution(min_submitted=min_submitted),
    )


def to_record(pair: Pair) -> rg.Record:
    import argilla as rg

    metadata: dict = {"a_origin": pair.a_origin, **{k: v for k, v in pair.info.items() if k in ("source", "model")}}
    suggestions = []
    if pair.score_a is not None and pair.score_b is not None:
        metadata |= {"score_a": pair.score_a, "score_b": pair.score_b}
        label = "a" if pair.score_a > pair.score_b else "b" if pair.score_b > pair.score_a else "tie"
        agent = pair.info.get("judge", "judge")
        suggestions.append(rg.Suggestion(question_name=PREFERENCE_QUESTION, value=label, agent=agent, type="model"))
    return rg.Record(
        id=pair.key,
        fields={"prompt": pair.prompt, "response_a": pair.response_a, "response_b": pair.response_b},
        metadata=metadata,
        suggestions=suggestions,
    )


def get_dataset(client: rg.Argilla, workspace: str, name: str) -> rg.Dataset | None:
    if client.workspaces(workspace) is None:
        raise AnnotationError(f"Argilla workspace {workspace!r} not found at {client.api_url}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "not found" is an answer here, not a warning
        return client.datasets(name=name, workspace=workspace)


def push_pairs(
    client: rg.Argilla | Callable[[], rg.Argilla],
    pairs_file: Path,
    workspace: str,
    name: str,
    min_submitted: int = 2,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> PushReport:
    """Add the pairs in `pairs_file` that the dataset does not hold yet (creating the dataset if needed).

    `client` may be a function that connects: the file is read and checked first, so a bad file is reported as
    such even when the server is down. `progress(sent, total)` is called after each batch of new pairs.

    A push stopped part-way is finished by pushing again: records are keyed by the pair's content (`Pair.key`),
    each batch is one server transaction, and the pairs already there are not sent again."""
    import argilla as rg

    pairs, duplicate_lines = read_pairs(pairs_file, seed=seed)
    if callable(client) and not isinstance(client, rg.Argilla):
        client = client()
    then = "pairs sent before it are kept: push again once the server is back to send the rest"
    with server_errors(client.api_url, "push", then):
        dataset, created = _open_dataset(client, workspace, name, min_submitted)
        existing = {record.id for record in dataset.records(with_suggestions=False, with_responses=False)}
        new = [to_record(pair) for pair in pairs if pair.key not in existing]
        for start in range(0, len(new), BATCH_SIZE):
            batch = new[start : start + BATCH_SIZE]
            # The SDK draws a tqdm bar on stderr; a failure would leave it half-drawn before the one-line error.
            with contextlib.redirect_stderr(io.StringIO()):
                dataset.records.log(batch, batch_size=len(batch))
            if progress is not None:
                progress(start + len(batch), len(new))
        return PushReport(
            dataset_id=str(dataset.id),
            created=created,
            added=len(new),
            already_present=len(pairs) - len(new),
            duplicate_lines=duplicate_lines,
            min_submitted=dataset.settings.distribution.min_submitted,
        )


def _open_dataset(client: rg.Argilla, workspace: str, name: str, min_submitted: int) -> tuple[rg.Dataset, bool]:
    """The dataset to push to, and whether this call created it.

    Creating one takes a dozen requests (the dataset, each field, question and metadata property, then publishing).
    A push stopped among them leaves a draft, which cannot hold records (so holds no annotations): it is removed
    and created again, rather than refusing every later push."""
    import argilla as rg

    dataset = get_dataset(client, workspace, name)
    if dataset is not None and dataset.api_model().status == "draft":
        dataset.delete()
        dataset = None
    if dataset is not None:
        _check_compatible(dataset, workspace, name)
        return dataset, False
    dataset = rg.Dataset(name=name, workspace=workspace, settings=preference_settings(min_submitted), client=client)
    dataset.create()
    return dataset, True


def _check_compatible(dataset: rg.Dataset, workspace: str, name: str) -> None:
    fields = {field.name for field in dataset.settings.fields}
    questions = {question.name for question in dataset.settings.questions}
    if not {"prompt", "response_a", "response_b"} <= fields or PREFERENCE_QUESTION not in questions:
        raise AnnotationError(
            f"Argilla dataset {workspace}/{name} exists but is not a workbench preference dataset "
            f"(fields {sorted(fields)}, questions {sorted(questions)}): choose another name"
        )
