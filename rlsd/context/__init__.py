"""Privileged-context ingestion from internal stores.

Sources are declared in YAML (:mod:`rlsd.context.config`), read through SQLAlchemy
(:mod:`rlsd.context.reader`), validated with Great Expectations and quarantined under a policy
threshold (:mod:`rlsd.context.validation`) under the data policy's redaction and leak rules
(:mod:`rlsd.context.policy`), and written as versioned snapshots (:mod:`rlsd.context.snapshot`,
:mod:`rlsd.context.ingest`), their manifest typed by :mod:`rlsd.context.manifest` and its
per-source table rendered by :mod:`rlsd.context.report`. The embedded demo store and its sources
are :mod:`rlsd.demo`.
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
from rlsd.context.reader import read_source, row_to_task, rows_to_tasks
from rlsd.context.validation import IngestionPolicyError, SourceValidation, validate_source


def verifier_names(root: Path | str = "verifiers") -> list[str]:
    """Names of the drop-in verifier folders under ``root`` (folders with a verifier.yaml)."""
    return sorted(p.parent.name for p in Path(root).glob("*/verifier.yaml"))


__all__ = [
    "ExpectationsConfig",
    "IngestionPolicyError",
    "MissingEnvVarError",
    "PolicyConfig",
    "SourceConfig",
    "SourceConfigError",
    "SourceValidation",
    "load_sources",
    "read_source",
    "row_to_task",
    "rows_to_tasks",
    "validate_source",
    "verifier_names",
]
