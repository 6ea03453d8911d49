"""An argilla-server search engine that answers from the server's own SQL database.

Runs inside the argilla-server virtual environment (it imports `argilla_server`), never in the
project's. argilla-server 2.8 refuses to start without Elasticsearch or OpenSearch, neither of which
these machines can run; its engine is pluggable (`SearchEngine.register(name)` plus
`ARGILLA_SEARCH_ENGINE=name`). SQL is the source of truth for records, responses and suggestions, so
the index-write hooks are no-ops and every read loads the dataset's rows and filters them in Python:
linear in the dataset's size, which is fine for the embedded small-team server (thousands of pairs),
not for a production deployment (use Argilla with Elasticsearch there).

Semantics follow the Elasticsearch engine in `argilla_server/search_engine/commons.py`: text queries
match when every word occurs (simple_query_string with operator AND); a response-status filter with
`pending` matches records the user has not answered (no response at all when no user is given); missing
values sort last in both directions; with a `user_id` and no sort the order is a per-user shuffle that
is stable for that user.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from datetime import datetime
from typing import Any
from uuid import UUID

from argilla_server.database import AsyncSessionLocal
from argilla_server.enums import MetadataPropertyType, ResponseStatusFilter, SimilarityOrder, SortOrder
from argilla_server.models import Dataset, MetadataProperty, Record, Response, Suggestion, User, Vector, VectorSettings
from argilla_server.search_engine import (
    AndFilter,
    Filter,
    FloatMetadataMetrics,
    IntegerMetadataMetrics,
    MetadataFilterScope,
    MetadataMetrics,
    Order,
    RangeFilter,
    RecordFilterScope,
    ResponseFilterScope,
    SearchEngine,
    SearchResponseItem,
    SearchResponses,
    SuggestionFilterScope,
    TermsFilter,
    TermsMetrics,
    TextQuery,
)
from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

ENGINE_NAME = "sql"
_WORD = re.compile(r"\w+", re.UNICODE)


@SearchEngine.register(engine_name=ENGINE_NAME)
class SQLSearchEngine(SearchEngine):
    """Search, progress and metadata metrics computed from the SQL database."""

    @classmethod
    async def new_instance(cls) -> SQLSearchEngine:
        return cls()

    async def close(self) -> None:
        return None

    async def ping(self) -> bool:
        return True

    async def info(self) -> dict:
        return {"engine": ENGINE_NAME, "source": "argilla-server SQL database"}

    # SQL is the source of truth: nothing to index.
    async def create_index(self, dataset: Dataset) -> None:
        return None

    async def delete_index(self, dataset: Dataset) -> None:
        return None

    async def configure_metadata_property(self, dataset: Dataset, metadata_property: MetadataProperty) -> None:
        return None

    async def configure_index_vectors(self, vector_settings: VectorSettings) -> None:
        return None

    async def index_records(self, dataset: Dataset, records) -> None:
        return None

    async def partial_record_update(self, record: Record, **update) -> None:
        return None

    async def delete_records(self, dataset: Dataset, records) -> None:
        return None

    async def update_record_response(self, response: Response) -> None:
        return None

    async def delete_record_response(self, response: Response) -> None:
        return None

    async def update_record_suggestion(self, suggestion: Suggestion) -> None:
        return None

    async def delete_record_suggestion(self, suggestion: Suggestion) -> None:
        return None

    async def get_dataset_progress(self, dataset: Dataset) -> dict:
        if dataset.is_draft:
            return {}
        query = select(Record.status, func.count()).where(Record.dataset_id == dataset.id).group_by(Record.status)
        async with AsyncSessionLocal() as db:
            counts = {str(status): count for status, count in (await db.execute(query)).all()}
        return {"total": sum(counts.values()), **counts}

    async def get_dataset_user_progress(self, dataset: Dataset, user: User) -> dict:
        if dataset.is_draft:
            return {}
        query = (
            select(Response.status, func.count())
            .join(Record, Record.id == Response.record_id)
            .where(Record.dataset_id == dataset.id, Response.user_id == user.id)
            .group_by(Response.status)
        )
        async with AsyncSessionLocal() as db:
            counts = {str(status): count for status, count in (await db.execute(query)).all()}
        return {"total": sum(counts.values()), **counts}

    async def search(
        self,
        dataset: Dataset,
        query: TextQuery | str | None = None,
        filter: Filter | None = None,
        sort: list[Order] | None = None,
        offset: int = 0,
        limit: int = 100,
        user_id: UUID | str | None = None,  # passed by the server although the abstract signature lacks it
    ) -> SearchResponses:
        records = await _load_records(dataset.id)
        scored = _match(dataset, records, query, filter)
        if sort:
            ordered = _sorted(scored, sort)
        elif query is not None:
            ordered = sorted(scored, key=lambda item: -item[1])
        elif user_id is not None:
            ordered = sorted(scored, key=lambda item: hashlib.sha1(f"{user_id}:{item[0].id}".encode()).digest())
        else:
            ordered = scored
        page = ordered[offset : offset + limit]
        items = [SearchResponseItem(record_id=record.id, score=score) for record, score in page]
        return SearchResponses(items=items, total=len(ordered))

    async def similarity_search(
        self,
        dataset: Dataset,
        vector_settings: VectorSettings,
        value: list[float] | None = None,
        record: Record | None = None,
        query: TextQuery | str | None = None,
        filter: Filter | None = None,
        max_results: int = 100,
        order: SimilarityOrder = SimilarityOrder.most_similar,
        threshold: float | None = None,
    ) -> SearchResponses:
        if bool(value) == bool(record):
            raise ValueError("Must provide either vector value or record to compute the similarity search")
        target = value or record.vector_value_by_vector_settings(vector_settings)
        if not target:
            raise ValueError("Cannot find a vector value to apply with provided info")
        records = await _load_records(dataset.id, vectors=True)
        scored = []
        for candidate, _ in _match(dataset, records, query, filter):
            if record is not None and candidate.id == record.id:
                continue
            vector = next((v.value for v in candidate.vectors if v.vector_settings_id == vector_settings.id), None)
            if vector is None:
                continue
            similarity = _cosine(target, vector)
            if threshold is None or similarity >= threshold:
                scored.append((candidate, similarity))
        scored.sort(key=lambda item: item[1], reverse=order == SimilarityOrder.most_similar)
        items = [SearchResponseItem(record_id=r.id, score=s) for r, s in scored[:max_results]]
        return SearchResponses(items=items, total=len(items))

    async def compute_metrics_for(self, metadata_property: MetadataProperty) -> MetadataMetrics:
        query = select(Record.metadata_).where(Record.dataset_id == metadata_property.dataset_id)
        async with AsyncSessionLocal() as db:
            rows = (await db.execute(query)).scalars().all()
        values = [row.get(metadata_property.name) for row in rows if row]
        values = [v for v in values if v is not None]
        if metadata_property.type == MetadataPropertyType.terms:
            # terms metadata may hold one value or a list of values, like the ES keyword field
            terms = Counter(str(t) for v in values for t in (v if isinstance(v, list) else [v]))
            return TermsMetrics(
                total=sum(terms.values()),
                values=[TermsMetrics.TermCount(term=t, count=c) for t, c in terms.most_common()],
            )
        metrics = (
            IntegerMetadataMetrics if metadata_property.type == MetadataPropertyType.integer else FloatMetadataMetrics
        )
        return metrics(min=min(values), max=max(values)) if values else metrics()


async def _load_records(dataset_id: UUID, vectors: bool = False) -> list[Record]:
    options = [selectinload(Record.responses), selectinload(Record.suggestions).selectinload(Suggestion.question)]
    if vectors:
        options.append(selectinload(Record.vectors).selectinload(Vector.vector_settings))
    query = (
        select(Record)
        .where(Record.dataset_id == dataset_id)
        .options(*options)
        .order_by(Record.inserted_at.asc(), Record.id.asc())
    )
    async with AsyncSessionLocal() as db:
        return list((await db.execute(query)).scalars().all())


def _match(dataset: Dataset, records: list[Record], query, filter) -> list[tuple[Record, float]]:
    words = _query_words(query)
    field = query.field if isinstance(query, TextQuery) else None
    if field and dataset.field_by_name(field) is None:
        raise Exception(f"Field {field} not found in dataset {dataset.id}")
    matched = []
    for record in records:
        if filter is not None and not _passes(record, filter):
            continue
        if words:
            text = _record_text(record, field).lower()
            if not all(word in text for word in words):
                continue
            matched.append((record, float(sum(text.count(word) for word in words))))
        else:
            matched.append((record, 1.0))
    return matched


def _query_words(query: TextQuery | str | None) -> list[str]:
    if query is None:
        return []
    text = query if isinstance(query, str) else query.q
    return [word.lower() for word in _WORD.findall(text)]


def _record_text(record: Record, field: str | None) -> str:
    values = [record.fields.get(field)] if field else list(record.fields.values())
    return " ".join(_flatten_text(value) for value in values if value is not None)


def _flatten_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):  # chat message or custom field
        return " ".join(_flatten_text(v) for v in value.values())
    if isinstance(value, list):
        return " ".join(_flatten_text(v) for v in value)
    return str(value)


def _passes(record: Record, filter: Filter) -> bool:
    if isinstance(filter, AndFilter):
        return all(_passes(record, f) for f in filter.filters)
    scope = filter.scope
    if isinstance(scope, ResponseFilterScope):
        return _passes_response_filter(record, filter)
    return _value_matches(_scope_values(record, scope), filter)


def _passes_response_filter(record: Record, filter: TermsFilter | RangeFilter) -> bool:
    scope: ResponseFilterScope = filter.scope
    responses = [r for r in record.responses if scope.user is None or r.user_id == scope.user.id]
    if scope.question:
        return any(_value_matches(_response_value(r, scope.question), filter) for r in responses)
    if scope.property != "status" or not isinstance(filter, TermsFilter):
        raise Exception(f"Cannot process filter scope {scope}")
    wanted = {str(v) for v in filter.values}
    if ResponseStatusFilter.pending.value in wanted and not responses:
        return True
    return any(str(r.status) in wanted for r in responses)


def _response_value(response: Response, question: str) -> list[Any]:
    answer = (response.values or {}).get(question)
    return _as_list(answer.get("value")) if isinstance(answer, dict) else []


def _scope_values(record: Record, scope) -> list[Any]:
    if isinstance(scope, RecordFilterScope):
        return _as_list(_comparable(getattr(record, str(scope.property))))
    if isinstance(scope, MetadataFilterScope):
        return _as_list((record.metadata_ or {}).get(scope.metadata_property))
    if isinstance(scope, SuggestionFilterScope):
        suggestion = next((s for s in record.suggestions if s.question.name == scope.question), None)
        return _as_list(getattr(suggestion, scope.property, None)) if suggestion else []
    raise ValueError(f"Cannot process request for search scope {scope}")


def _value_matches(values: list[Any], filter: Filter) -> bool:
    if isinstance(filter, TermsFilter):
        wanted = {str(v) for v in filter.values}
        return any(str(v) in wanted for v in values)
    if isinstance(filter, RangeFilter):
        numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
        return any((filter.ge is None or v >= filter.ge) and (filter.le is None or v <= filter.le) for v in numbers)
    raise ValueError(f"Cannot process request for filter {filter}")


def _sorted(scored: list[tuple[Record, float]], sort: list[Order]) -> list[tuple[Record, float]]:
    ordered = list(scored)
    # Python's sort is stable: apply the keys from last to first; missing values always go last.
    for order in reversed(sort):
        keyed = [(item, _sort_value(item[0], order.scope)) for item in ordered]
        present = [(item, key) for item, key in keyed if key is not None]
        missing = [item for item, key in keyed if key is None]
        present.sort(key=lambda pair: pair[1], reverse=order.order == SortOrder.desc)
        ordered = [item for item, _ in present] + missing
    return ordered


def _sort_value(record: Record, scope) -> Any:
    if isinstance(scope, ResponseFilterScope):
        responses = [r for r in record.responses if scope.user is None or r.user_id == scope.user.id]
        if scope.question:
            numbers = [v for r in responses for v in _response_value(r, scope.question) if isinstance(v, int | float)]
            return sum(numbers) / len(numbers) if numbers else None  # ES sorts nested values by their average
        statuses = sorted(str(r.status) for r in responses)
        return statuses[0] if statuses else None
    values = _scope_values(record, scope)
    return values[0] if values else None


def _comparable(value: Any) -> Any:
    """Dates compare as epoch milliseconds (what an ES range on a date field takes); enums as strings."""
    if isinstance(value, datetime):
        return value.timestamp() * 1000
    if isinstance(value, UUID):
        return str(value)
    return value


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _cosine(a: list[float], b: list[float]) -> float:
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return sum(x * y for x, y in zip(a, b, strict=False)) / norm if norm else 0.0
