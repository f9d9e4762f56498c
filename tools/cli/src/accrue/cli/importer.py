"""`accrue import`: master data from CSV files (one per entity type) or a JSON bundle.

CSV: the file's name says the entity type (`consultants.csv`, `legal-entities.csv`, or
`--kind`); the header names the fields as the REST API does (`code`, `legalEntityRef.system`,
...). A dot reaches into an object; a cell holding a JSON list or object (`rates`, `lines`,
`holidays`) is parsed as JSON; an empty cell is left out.

JSON: a bundle `{"legalEntities": [...], "consultants": [...], ...}` with every type, or a
list of rows of the type the file's name (or `--kind`) says.

Rows are upserted by external_ref, so an import can be run again: what is already there comes
back unchanged. Rejected rows are listed, with every reason, in a CSV report.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from accrue.cli.sync import COLLECTIONS, Collection, Row, Summary, collection_named, rows_of

# Boolean fields, given in CSV as true/false (JSON has real booleans).
_BOOLEANS = frozenset({"billable", "showDeactivated"})
_TRUE = frozenset({"true", "yes", "1"})
_FALSE = frozenset({"false", "no", "0"})
REPORT_COLUMNS = ("collection", "row", "external_ref", "field", "code", "message")


class ImportFileError(ValueError):
    """A file that cannot be imported at all (unknown type, not CSV or JSON, malformed)."""


def _cell(name: str, text: str) -> Any:
    if name in _BOOLEANS:
        lowered = text.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        return text  # the API names the bad value
    if text[:1] in ("[", "{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text
    return text


def _put(body: dict[str, Any], column: str, value: Any) -> None:
    *parents, leaf = column.split(".")
    target = body
    for part in parents:
        child = target.setdefault(part, {})
        if not isinstance(child, dict):
            raise ImportFileError(f"column {column!r} goes into {part!r}, which is not an object")
        target = child
    target[leaf] = value


def read_csv(path: Path) -> list[Row]:
    """The rows of a CSV file; the origin of each is its line in the file."""
    rows: list[Row] = []
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames:
            raise ImportFileError(f"{path.name} has no header row")
        for record in reader:
            body: dict[str, Any] = {}
            for column, text in record.items():
                if column is None or text is None or text == "":
                    continue  # extra cells without a header, short lines, empty cells
                _put(body, column.strip(), _cell(column.strip().rsplit(".", 1)[-1], text))
            if body:
                rows.append(Row(body, f"{path.name}:{reader.line_num}"))
    return rows


def read_json(path: Path, kind: Collection | None) -> dict[Collection, list[Row]]:
    """A bundle of every type, or a list of rows of one type."""
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise ImportFileError(f"{path.name} is not valid JSON: {exc.msg} (line {exc.lineno})") from None
    if isinstance(data, list):
        if kind is None:
            raise ImportFileError(
                f"{path.name} is a list of rows; name its type with --kind or in the file name"
            )
        return {kind: _objects(path, kind, data, kind.field)}
    if not isinstance(data, dict):
        raise ImportFileError(f"{path.name} must hold a JSON object (a bundle) or a list of rows")
    found: dict[Collection, list[Row]] = {}
    for key, rows in data.items():
        collection = collection_named(key)
        if collection is None:
            known = ", ".join(c.field for c in COLLECTIONS)
            raise ImportFileError(f"{path.name}: {key!r} is not an entity type; the types are {known}")
        if not isinstance(rows, list):
            raise ImportFileError(f"{path.name}: {key} must be a list of rows")
        found.setdefault(collection, []).extend(_objects(path, collection, rows, key))
    return found


def _objects(path: Path, collection: Collection, rows: list[Any], key: str) -> list[Row]:
    bad = [i for i, row in enumerate(rows, 1) if not isinstance(row, dict)]
    if bad:
        raise ImportFileError(f"{path.name}: {key}[{bad[0] - 1}] is not an object")
    return rows_of(collection, rows, f"{path.name}#{key}")


def read_files(paths: Sequence[Path], kind: str | None = None) -> dict[Collection, list[Row]]:
    """Every file's rows by collection (a CSV's type from --kind or its name)."""
    forced = None
    if kind is not None:
        forced = collection_named(kind)
        if forced is None:
            raise ImportFileError(
                f"unknown --kind {kind!r}; the types are {', '.join(c.path for c in COLLECTIONS)}"
            )
    found: dict[Collection, list[Row]] = {}
    for path in paths:
        if not path.is_file():
            raise ImportFileError(f"{path} is not a file")
        named = forced or collection_named(path.stem)
        suffix = path.suffix.lower()
        if suffix == ".json":
            for collection, rows in read_json(path, named).items():
                found.setdefault(collection, []).extend(rows)
        elif suffix == ".csv":
            if named is None:
                raise ImportFileError(
                    f"cannot tell the entity type of {path.name}: name the file after it "
                    f"(e.g. consultants.csv) or pass --kind"
                )
            found.setdefault(named, []).extend(read_csv(path))
        else:
            raise ImportFileError(f"{path.name}: import takes .csv or .json files")
    return found


def write_report(path: Path, summary: Summary) -> int:
    """The rejected rows, one line per reason; returns how many rows were rejected."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(REPORT_COLUMNS)
        for rejection in summary.rejections:
            for field, code, message in rejection.reasons or [("", "REJECTED", "")]:
                writer.writerow(
                    [rejection.collection, rejection.origin, rejection.external_ref, field, code, message]
                )
    return len(summary.rejections)
