"""Privileged-context ingestion from internal stores.

Sources are declared in YAML (:mod:`rlsd.context.config`), read through SQLAlchemy
(:mod:`rlsd.context.reader`), validated with Great Expectations and quarantined under a policy
threshold (:mod:`rlsd.context.validation`) under the data policy's redaction and leak rules
(:mod:`rlsd.context.policy`), and written as versioned snapshots (:mod:`rlsd.context.snapshot`,
:mod:`rlsd.context.ingest`). :mod:`rlsd.context.demo_store` builds the embedded SQLite demo store
(with :mod:`~rlsd.context.demo_sql` and :mod:`~rlsd.context.demo_json`) and ``DEMO_SOURCES``
declares the sources over it; :mod:`rlsd.context.store_copy` copies a store between databases.
"""

from __future__ import annotations

from pathlib import Path

from rlsd.context.config import (
    ExpectationsConfig,
    MissingEnvVarError,
    PolicyConfig,
    SourceConfig,
    SourceConfigError,
    load_sources,
)
from rlsd.context.demo_store import build_demo_store
from rlsd.context.reader import read_source, row_to_task, rows_to_tasks
from rlsd.context.validation import IngestionPolicyError, SourceValidation, validate_source

#: Sources over the demo store; set RLSD_DEMO_STORE to the store's path before reading them.
DEMO_SOURCES = Path(__file__).with_name("demo_sources.yaml")


def verifier_names(root: Path | str = "verifiers") -> list[str]:
    """Names of the drop-in verifier folders under ``root`` (folders with a verifier.yaml)."""
    return sorted(p.parent.name for p in Path(root).glob("*/verifier.yaml"))


__all__ = [
    "DEMO_SOURCES",
    "ExpectationsConfig",
    "IngestionPolicyError",
    "MissingEnvVarError",
    "PolicyConfig",
    "SourceConfig",
    "SourceConfigError",
    "SourceValidation",
    "build_demo_store",
    "load_sources",
    "read_source",
    "row_to_task",
    "rows_to_tasks",
    "validate_source",
    "verifier_names",
]
