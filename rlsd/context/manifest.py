"""``manifest.json`` of a snapshot, typed: what ingestion records and every reader reads.

The field names are the JSON keys, so the file on disk is what it always was: the manifest is
written from the model with only the fields that were set (:func:`manifest_json`), and a
snapshot written before a field existed still loads (the ingestion-only sections are optional,
unknown keys are kept). A snapshot written by :func:`~rlsd.context.snapshot.write_snapshot`
without ingestion (tests, task generators) has only the core fields.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict

# Every model keeps keys it does not know (extra="allow"): a manifest written by another
# version of rlsd must load, and be written back, without losing what it records.
_CONFIG = ConfigDict(extra="allow", frozen=True)


class SplitCounts(BaseModel):
    model_config = _CONFIG

    train: int = 0
    heldout: int = 0


class Counts(BaseModel):
    model_config = _CONFIG

    tasks: int
    train: int
    heldout: int
    by_domain: dict[str, SplitCounts]
    by_source: dict[str, SplitCounts]


class ImagesInfo(BaseModel):
    model_config = _CONFIG

    dir: str
    count: int
    bytes: int


class FileRecord(BaseModel):
    """What ingestion wrote of one data file. Not evidence of the content -- it sits beside the
    digest it would vouch for; :func:`~rlsd.context.snapshot.load_snapshot` recomputes the
    content digest from the files and checks these for consistency only."""

    model_config = _CONFIG

    sha256: str
    lines: int
    #: set (True) on ``privileged.jsonl`` only: governed data, never an artifact by default
    privileged: bool | None = None


class SourcesFileInfo(BaseModel):
    model_config = _CONFIG

    path: str
    sha256: str


class SourceRecord(BaseModel):
    """One ingested source: where it is (URL with its ``${ENV}`` references), what came out."""

    model_config = _CONFIG

    name: str
    url: str
    query_sha256: str
    domain: str
    verifier: str | None
    split_column: bool
    heldout_fraction: float
    rows: int
    tasks: int
    quarantined: int
    bad_fraction: float
    max_bad_fraction: float
    validation_success: bool
    redactions: dict[str, int]


class PolicyInfo(BaseModel):
    """The data policy the snapshot was ingested under (its digest and the settings shown)."""

    model_config = _CONFIG

    path: str
    digest: str
    store_privileged_text: bool
    allowed_sources: list[str]
    redaction: list[str]


class SplitRule(BaseModel):
    model_config = _CONFIG

    rule: str
    salt: str


class ValidationInfo(BaseModel):
    model_config = _CONFIG

    passed: bool
    quarantined: int
    summary: str


class SnapshotManifest(BaseModel):
    """``manifest.json``: the core every snapshot has, then what ingestion adds."""

    model_config = _CONFIG

    format: str
    name: str
    #: the content digest as claimed; a loaded snapshot's is recomputed from its files
    digest: str
    created_at: str
    counts: Counts
    files: dict[str, FileRecord]
    images: ImagesInfo | None = None
    # written by ingestion (rlsd.context.ingest); absent from snapshots written without it
    sources_file: SourcesFileInfo | None = None
    sources: list[SourceRecord] = []
    policy: PolicyInfo | None = None
    split: SplitRule | None = None
    validation: ValidationInfo | None = None
    verifiers: list[str] = []
    rlsd_version: str | None = None

    def source_counts(self, name: str) -> SplitCounts:
        """Train / held-out tasks of source ``name`` (zero when none survived validation)."""
        return self.counts.by_source.get(name, SplitCounts())


def manifest_dict(manifest: SnapshotManifest) -> dict[str, Any]:
    """The manifest as the JSON mapping on disk: only the fields that were set."""
    return manifest.model_dump(mode="json", exclude_unset=True)


def manifest_json(manifest: SnapshotManifest) -> str:
    """The text of ``manifest.json`` (the same bytes the untyped writer produced)."""
    return json.dumps(manifest_dict(manifest), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
