"""Master data into a running Accrue through its public REST API, by `:batchUpsert`.

Shared by `accrue import` (rows from files) and `accrue seed` (a generated firm). Rows go in the
order their references need (legal entities before the customers that name them, managers
before their reports) in batches; each row comes back created, updated, unchanged or rejected.
Upserts are keyed by external_ref, so running the same rows again changes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8080"
MAX_BATCH = 1000


@dataclass(frozen=True)
class Collection:
    """One master-data collection as the REST API names it."""

    path: str  # "legal-entities"
    field: str  # "legalEntities": the body's list and the List reply's list
    singular: str  # "legalEntity": the resource in each batch result
    # The field holding a reference to another row of the same collection (managers).
    self_ref: str = ""

    def matches(self, name: str) -> bool:
        """Whether a file stem or bundle key names this collection."""
        wanted = name.lower().replace("_", "-")
        return wanted in (self.path, self.field.lower(), _kebab(self.field))


def _kebab(camel: str) -> str:
    return "".join(f"-{c.lower()}" if c.isupper() else c for c in camel)


# In the order references need: every collection only names collections before it.
COLLECTIONS: tuple[Collection, ...] = (
    Collection("legal-entities", "legalEntities", "legalEntity"),
    Collection("labor-categories", "laborCategories", "laborCategory"),
    Collection("calendars", "calendars", "calendar"),
    Collection("customers", "customers", "customer"),
    Collection("consultants", "consultants", "consultant", self_ref="managerRef"),
    Collection("projects", "projects", "project"),
    Collection("rate-cards", "rateCards", "rateCard"),
    Collection("contracts", "contracts", "contract"),
    Collection("milestones", "milestones", "milestone"),
    Collection("assignments", "assignments", "assignment"),
    Collection("opportunities", "opportunities", "opportunity"),
    Collection("fx-rates", "fxRates", "fxRate"),
    Collection("tax-rates", "taxRates", "taxRate"),
)


def collection_named(name: str) -> Collection | None:
    """The collection a file stem or bundle key names ("consultants", "legal_entities", ...)."""
    return next((c for c in COLLECTIONS if c.matches(name)), None)


class SyncError(RuntimeError):
    """The API could not be reached or refused a whole request in a way retrying cannot fix."""


@dataclass
class Row:
    """One row to upsert, and where it came from (for the report)."""

    body: dict[str, Any]
    origin: str  # e.g. "consultants.csv:12"


@dataclass
class Rejection:
    """A rejected row and every reason, as the API gave them."""

    collection: str
    origin: str
    external_ref: str
    reasons: list[tuple[str, str, str]]  # (field, code, message)


@dataclass
class Tally:
    """What happened to the rows of one collection."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0

    @property
    def total(self) -> int:
        return self.created + self.updated + self.unchanged + self.rejected


@dataclass
class Summary:
    """The outcome of a sync: counts per collection and the rejected rows."""

    tallies: dict[str, Tally] = field(default_factory=dict)
    rejections: list[Rejection] = field(default_factory=list)
    # The stored resources by (collection path, external_ref system, id), for callers that
    # need the ids the server gave (the seed prints a few).
    resources: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)

    @property
    def rejected(self) -> int:
        return sum(t.rejected for t in self.tallies.values())


Progress = Callable[[str, int], None]


def in_reference_order(collection: Collection, rows: Sequence[Row]) -> list[Row]:
    """Rows that another row of the same collection names come first (managers before reports)."""
    if not collection.self_ref:
        return list(rows)
    by_ref = {_ref_key(r.body.get("externalRef")): r for r in rows}
    placed: set[int] = set()
    ordered: list[Row] = []

    def place(row: Row, depth: int = 0) -> None:
        if id(row) in placed:
            return
        placed.add(id(row))
        target = by_ref.get(_ref_key(row.body.get(collection.self_ref)))
        if target is not None and depth < len(rows):
            place(target, depth + 1)
        ordered.append(row)

    for row in rows:
        place(row)
    return ordered


def _ref_key(ref: Any) -> tuple[str, str] | None:
    if isinstance(ref, dict) and ref.get("system") and ref.get("id"):
        return str(ref["system"]), str(ref["id"])
    return None


def _ref_text(body: dict[str, Any]) -> str:
    key = _ref_key(body.get("externalRef"))
    return f"{key[0]}/{key[1]}" if key else ""


class Syncer:
    """Sends rows to `POST /v1/<collection>:batchUpsert` and tallies the results."""

    def __init__(
        self,
        client: httpx.Client,
        *,
        batch_size: int = 500,
        source: str = "",
        actor: str = "",
        retries: int = 4,
    ) -> None:
        if not 1 <= batch_size <= MAX_BATCH:
            raise ValueError(f"the batch size must be 1 to {MAX_BATCH}")
        self._client = client
        self._batch_size = batch_size
        self._source = source
        self._actor = actor
        self._retries = retries

    def sync(
        self, rows_by_collection: Mapping[Collection, Sequence[Row]], progress: Progress | None = None
    ) -> Summary:
        """Upsert every collection's rows, in reference order; returns what happened."""
        summary = Summary()
        for collection in COLLECTIONS:
            rows = rows_by_collection.get(collection)
            if not rows:
                continue
            tally = summary.tallies.setdefault(collection.path, Tally())
            ordered = in_reference_order(collection, rows)
            for start in range(0, len(ordered), self._batch_size):
                batch = ordered[start : start + self._batch_size]
                for row, result in zip(batch, self._upsert(collection, batch), strict=True):
                    self._record(summary, tally, collection, row, result)
                if progress is not None:
                    progress(collection.path, len(batch))
        return summary

    def _record(
        self, summary: Summary, tally: Tally, collection: Collection, row: Row, result: dict[str, Any]
    ) -> None:
        outcome = str(result.get("outcome", "")).removeprefix("UPSERT_OUTCOME_")
        if outcome == "REJECTED":
            tally.rejected += 1
            reasons = [
                (str(v.get("field", "")), str(v.get("code", "")), str(v.get("message", "")))
                for v in result.get("reasons", [])
            ]
            summary.rejections.append(Rejection(collection.path, row.origin, _ref_text(row.body), reasons))
            return
        if outcome == "CREATED":
            tally.created += 1
        elif outcome == "UPDATED":
            tally.updated += 1
        else:
            tally.unchanged += 1
        resource = result.get(collection.singular) or {}
        key = _ref_key(resource.get("externalRef"))
        if key is not None:
            summary.resources[(collection.path, *key)] = resource

    def _upsert(self, collection: Collection, batch: Sequence[Row]) -> list[dict[str, Any]]:
        """One result per row. A batch the API refuses as a whole (a row that is not even
        well-formed JSON for its type) is split, so only the offending rows are rejected."""
        body: dict[str, Any] = {collection.field: [r.body for r in batch]}
        if self._source:
            body["source"] = self._source
        if self._actor:
            body["actor"] = self._actor
        response = self._post(f"/v1/{collection.path}:batchUpsert", body)
        if response.status_code == 200:
            results: list[dict[str, Any]] = response.json()["results"]
            return results
        if response.status_code == 400 and len(batch) > 1:
            middle = len(batch) // 2
            return self._upsert(collection, batch[:middle]) + self._upsert(collection, batch[middle:])
        if response.status_code == 400:
            problem = _problem(response)
            # The row was sent alone: its fields are "<collection>[0].<field>" in the problem.
            prefix = f"{collection.field}[0]."
            violations = [
                {**v, "field": str(v.get("field", "")).removeprefix(prefix)}
                for v in problem.get("violations") or []
            ] or [
                {"field": "", "code": problem.get("reason", "INVALID"), "message": problem.get("detail", "")}
            ]
            return [{"outcome": "UPSERT_OUTCOME_REJECTED", "reasons": violations}]
        raise SyncError(
            f"POST /v1/{collection.path}:batchUpsert answered {response.status_code}: "
            f"{_problem(response).get('detail') or response.text[:300]}"
        )

    def _post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        """POST, retrying what may pass on a second try (the upsert is idempotent, so it is safe)."""
        delay = 0.5
        for attempt in range(self._retries + 1):
            try:
                response = self._client.post(path, json=body)
            except httpx.TransportError as exc:
                if attempt == self._retries:
                    raise SyncError(f"cannot reach {self._client.base_url}: {exc}") from exc
            else:
                if response.status_code not in (409, 429, 502, 503, 504) or attempt == self._retries:
                    return response
            time.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover


def _problem(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def check_reachable(client: httpx.Client) -> None:
    """Fail early, with a hint, when no gateway answers."""
    try:
        response = client.get("/readyz")
    except httpx.TransportError as exc:
        raise SyncError(
            f"cannot reach Accrue at {client.base_url} ({exc.__class__.__name__}); start it with `make run`, "
            "or point --url at a running gateway"
        ) from exc
    if response.status_code != 200:
        raise SyncError(f"Accrue at {client.base_url} is not ready: {response.text[:300]}")


def count_rows(rows_by_collection: Mapping[Collection, Sequence[Row]]) -> int:
    """How many rows there are in all."""
    return sum(len(rows) for rows in rows_by_collection.values())


def rows_of(collection: Collection, bodies: Iterable[dict[str, Any]], origin: str) -> list[Row]:
    """Rows numbered from 1 within an origin ("seed", a file name)."""
    return [Row(body, f"{origin}:{i}") for i, body in enumerate(bodies, 1)]
