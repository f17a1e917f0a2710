"""The per-source table of a snapshot: what each source gave, as ``rlsd ingest``, the ingest
stage's data-validation artifact and the lineage report show it (each its own columns)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from rlsd.context.manifest import SnapshotManifest, SourceRecord
from rlsd.tables import TextTable
from rlsd.uris import mask_uri


def _redactions(s: SourceRecord, _: SnapshotManifest) -> str:
    return ", ".join(f"{k} {n}" for k, n in s.redactions.items()) or "—"


def _ge(s: SourceRecord, _: SnapshotManifest) -> str:
    # a source that failed its expectations but stayed under its bad-row threshold was ingested
    return "passed" if s.validation_success else "passed within threshold"


_Cell = Callable[[SourceRecord, SnapshotManifest], Any]

#: column -> its cell; "redacted" and "redactions" are the same column under two headers
SOURCE_COLUMNS: dict[str, _Cell] = {
    "source": lambda s, _: s.name,
    # masked for display: a manifest written before literal passwords were refused may hold one
    "url": lambda s, _: mask_uri(s.url),
    "domain": lambda s, _: s.domain,
    "rows": lambda s, _: s.rows,
    "tasks": lambda s, _: s.tasks,
    "quarantined": lambda s, _: s.quarantined,
    "train": lambda s, m: m.source_counts(s.name).train,
    "heldout": lambda s, m: m.source_counts(s.name).heldout,
    "redacted": _redactions,
    "redactions": _redactions,
    "GE": _ge,
}
# left-aligned in a terminal; the redactions stay right-aligned, as `rlsd ingest` always showed
_TEXT_COLUMNS = frozenset({"source", "url", "domain", "GE"})


def sources_table(
    manifest: SnapshotManifest, columns: Sequence[str], *, title: str = ""
) -> TextTable:
    """One row per ingested source, with ``columns`` (names from :data:`SOURCE_COLUMNS`)."""
    unknown = [c for c in columns if c not in SOURCE_COLUMNS]
    if unknown:
        raise ValueError(f"unknown source column(s) {unknown}; known: {list(SOURCE_COLUMNS)}")
    rows = [[SOURCE_COLUMNS[c](s, manifest) for c in columns] for s in manifest.sources]
    return TextTable(
        headers=list(columns),
        rows=rows,
        title=title,
        text_columns=frozenset(c for c in columns if c in _TEXT_COLUMNS),
    )
