"""The ingestion stage of the pipeline: the declared sources (or the demo sources over the demo
store) into one validated, redacted snapshot, handed on loaded (the MLflow record is
:func:`rlsd.tracking.records.record_ingest`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

from rlsd.context.ingest import QUARANTINE_CHANGED, ingest
from rlsd.context.policy import default_policy_path, load_privileged_policy
from rlsd.context.report import sources_table
from rlsd.context.snapshot import Snapshot


class IngestOutcome(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    snapshot: Snapshot
    created: bool
    sources_file: str
    policy_path: str
    store_privileged_text: bool
    #: this ingestion's validation/ and quarantine/ (the snapshot's own unless the tasks were
    #: unchanged and the quarantine was not: then its evidence folder beside the snapshot)
    evidence_dir: str = ""
    quarantine_sha256: str = ""
    #: rows this ingestion quarantined (the manifest counts those of the snapshot's first one)
    quarantined: int = 0
    #: "new", "unchanged" or "tasks unchanged, quarantine changed"
    status: str = ""

    def markdown(self) -> str:
        m = self.snapshot.manifest
        table = sources_table(
            m, ["source", "domain", "rows", "tasks", "quarantined", "redacted", "GE"]
        )
        head = f"Snapshot `{self.snapshot.path.name}` — digest `{m.digest}`"
        if self.status == QUARANTINE_CHANGED:
            # the table is the snapshot's first ingestion; say what this one found
            head += (
                f"\n\n**{self.status}**: this ingestion quarantined {self.quarantined} row(s) "
                f"(evidence `{self.quarantine_sha256}`); the table below is the snapshot's "
                "first ingestion"
            )
        return f"### Data validation\n\n{head}\n\n" + table.markdown()


def ingest_stage(
    *,
    sources: str | None,
    demo_store: str,
    policy: str | None,
    snapshots_dir: str,
    verifiers_root: str | None,
    only: list[str] | None,
) -> IngestOutcome:
    """``sources`` None: the demo sources over ``demo_store`` (built when missing)."""
    from rlsd.demo import demo_sources

    variables: dict[str, str] = {}
    if sources is None:
        demo = demo_sources(demo_store, build=True)
        sources_path, variables = demo.path, demo.variables
    else:
        sources_path = Path(sources)
    policy_path = Path(policy) if policy else default_policy_path()
    data_policy = load_privileged_policy(policy_path)
    res = ingest(
        sources_path, policy_path=policy_path, out_root=snapshots_dir,
        verifiers_root=verifiers_root, only=only, variables=variables,
    )  # fmt: skip
    return IngestOutcome(
        snapshot=res.snapshot,
        created=res.created,
        sources_file=str(sources_path),
        policy_path=str(policy_path),
        store_privileged_text=data_policy.store_privileged_text,
        evidence_dir=str(res.evidence),
        quarantine_sha256=res.quarantine_sha256,
        quarantined=res.quarantined,
        status=res.status,
    )
