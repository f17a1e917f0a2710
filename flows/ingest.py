"""Stage task: ingest the privileged context into a validated, redacted, versioned snapshot.

Retried only on connection-level database errors (a refused connection, a server that went
away), never on anything a retry cannot change: a missing table or SQLite file, a wrong
password, bad data, or a source over its bad-row threshold fail the same way every time. What
fails reaches Prefect (its logs, the state message, the pickled exception) as the reader's
clean :class:`~rlsd.context.reader.IngestError`: the source's name and the error's class.
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact

from rlsd.context.reader import is_transient
from rlsd.context.stage import IngestOutcome, ingest_stage
from rlsd.pipeline.config import PipelineConfig
from rlsd.tracking.records import record_ingest


def transient_db_error(task: Any, task_run: Any, state: Any) -> bool:
    """Retry ingestion only on connection-level database errors, never on validation."""
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - classify, then decide
        # an OperationalError is also a missing table, a missing file or a wrong password:
        # the reader's classification (SQLSTATE, SQLite error name) tells them apart
        return is_transient(exc)
    return False


@task(
    name="ingest-context", retries=2, retry_delay_seconds=10, retry_condition_fn=transient_db_error
)
def ingest_task(cfg: PipelineConfig, parent: str) -> IngestOutcome:
    out = ingest_stage(
        sources=cfg.sources, demo_store=cfg.demo_store, policy=cfg.data_policy,
        snapshots_dir=cfg.snapshots_dir, verifiers_root=cfg.verifiers_root, only=cfg.source_names,
    )  # fmt: skip
    record_ingest(parent, out)
    create_markdown_artifact(out.markdown(), key="data-validation", description=f"MLflow {parent}")
    return out
