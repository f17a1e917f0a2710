"""Stage task: ingest the privileged context into a validated, redacted, versioned snapshot.

Retried only on connection-level database errors (a transient outage), never on validation:
a source over its bad-row threshold fails the same way every time.
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact

from rlsd.context.stage import IngestOutcome, ingest_stage
from rlsd.pipeline.config import PipelineConfig
from rlsd.tracking.records import record_ingest


def transient_db_error(task: Any, task_run: Any, state: Any) -> bool:
    """Retry ingestion only on connection-level database errors, never on validation."""
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - classify, then decide
        from sqlalchemy.exc import DisconnectionError, OperationalError

        return isinstance(exc, OperationalError | DisconnectionError | ConnectionError)
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
