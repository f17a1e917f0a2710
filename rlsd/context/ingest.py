"""Ingestion: declared sources -> policy check -> validation and redaction -> a snapshot.

``ingest`` is what ``rlsd ingest`` and the pipeline's ``ingest_context`` stage call. A source the
data policy does not allow is refused before anything is read; a source above its bad-row
threshold stops the ingestion (its evidence is kept under ``<out>/failed/``); otherwise the
redacted tasks of every source become one versioned snapshot (:mod:`rlsd.context.snapshot`).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from rlsd.context.config import SourceConfig, load_sources
from rlsd.context.manifest import (
    PolicyInfo,
    SourceRecord,
    SourcesFileInfo,
    SplitRule,
    ValidationInfo,
)
from rlsd.context.policy import (
    PrivilegedContextPolicy,
    check_sources_allowed,
    default_policy_path,
    load_privileged_policy,
)
from rlsd.context.reader import SPLIT_SALT, quarantine_record
from rlsd.context.snapshot import Snapshot, load_snapshot, write_snapshot
from rlsd.context.validation import IngestionPolicyError, SourceValidation, validate_source

log = logging.getLogger(__name__)


@dataclass
class IngestResult:
    """What an ingestion produced: the snapshot, loaded (manifest and tasks, handed on to the
    trainer as they are), whether it is new, and each source's validation."""

    #: the snapshot folder, ``<out_root>/<name>-<digest12>``
    path: Path
    snapshot: Snapshot
    #: False when a snapshot with the same content digest already existed (it was kept)
    created: bool
    validations: list[SourceValidation]


def _sha256_file(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def _source_record(cfg: SourceConfig, v: SourceValidation) -> SourceRecord:
    query = cfg.query if cfg.query is not None else f"TABLE {cfg.table}"
    return SourceRecord(
        name=cfg.name,
        url=cfg.url,  # with its ${ENV} references unresolved: never a secret
        query_sha256="sha256:" + hashlib.sha256(query.encode()).hexdigest(),
        domain=cfg.domain,
        verifier=cfg.verifier,
        split_column="split" in cfg.columns,
        heldout_fraction=cfg.heldout_fraction,
        rows=v.n_rows,
        tasks=len(v.tasks),
        quarantined=len(v.quarantined),
        bad_fraction=round(v.bad_fraction, 6),
        max_bad_fraction=cfg.policy.max_bad_fraction,
        validation_success=bool(v.results.get("success", True)),
        redactions=dict(sorted(v.redactions.items())),
    )


def _quarantine_cross_source_duplicates(
    validations: list[tuple[SourceConfig, SourceValidation]],
) -> None:
    """Ids claimed by two sources: neither row may silently win, both are quarantined."""
    owners: dict[str, list[str]] = {}
    for cfg, v in validations:
        for t in v.tasks:
            owners.setdefault(t.id, []).append(cfg.name)
    clash = {tid: names for tid, names in owners.items() if len(names) > 1}
    if not clash:
        return
    for cfg, v in validations:
        keep = []
        for t in v.tasks:
            if t.id in clash:
                row = {"id": t.id, "prompt": t.prompt[-1].content, "answer": t.answer}
                reason = f"duplicate_id_across_sources({', '.join(clash[t.id])})"
                v.quarantined.append(quarantine_record(cfg, row, [reason], -1))
            else:
                keep.append(t)
        v.tasks[:] = keep


def ingest(
    sources_path: Path | str,
    *,
    policy_path: Path | str | None = None,
    out_root: Path | str = "snapshots",
    verifiers_root: Path | str | None = None,
    only: Sequence[str] | None = None,
    name: str | None = None,
    on_source: Callable[[str, SourceValidation], None] | None = None,
    variables: Mapping[str, str] | None = None,
) -> IngestResult:
    """Ingest every declared source (or ``only`` those) into one snapshot under ``out_root``.

    ``variables`` fill the sources' ``${VAR}`` references before the environment does (the
    demo sources' store, :func:`rlsd.demo.demo_sources`); the manifest keeps the references.
    """
    from rlsd.context import verifier_names

    sources_path, out_root = Path(sources_path), Path(out_root)
    policy_path = Path(policy_path) if policy_path is not None else default_policy_path()
    sources = load_sources(sources_path)
    policy: PrivilegedContextPolicy = load_privileged_policy(policy_path)
    selected = [s for s in sources if only is None or s.name in only]
    if only is not None:
        unknown = sorted(set(only) - {s.name for s in sources})
        if unknown:
            raise KeyError(
                f"{sources_path}: no source(s) {unknown}; declared: {[s.name for s in sources]}"
            )
    check_sources_allowed(policy, [s.name for s in selected], policy_path)
    from rlsd.paths import verifiers_root as default_verifiers_root

    known = verifier_names(
        verifiers_root if verifiers_root is not None else default_verifiers_root()
    )

    out_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".ingest-", dir=out_root))
    try:
        validations: list[tuple[SourceConfig, SourceValidation]] = []
        try:
            for cfg in selected:
                v = validate_source(
                    cfg,
                    known,
                    out_dir=staging / "validation",
                    policy=policy,
                    variables=variables,
                )
                validations.append((cfg, v))
                if on_source is not None:
                    on_source(cfg.name, v)
        except IngestionPolicyError as exc:
            stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")
            failed = out_root / "failed" / stamp
            failed.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(staging), failed)
            raise IngestionPolicyError(f"{exc}\nvalidation evidence kept in {failed}") from None

        _quarantine_cross_source_duplicates(validations)
        (staging / "quarantine").mkdir(exist_ok=True)
        for cfg, v in validations:
            qfile = staging / "validation" / f"{cfg.name}.quarantine.jsonl"
            with (staging / "quarantine" / f"{cfg.name}.jsonl").open("w") as fh:
                for q in sorted(v.quarantined, key=lambda q: (q["row_index"], str(q["id"]))):
                    fh.write(json.dumps(q, sort_keys=True) + "\n")
            qfile.unlink(missing_ok=True)
        summary = {
            "passed": True,
            "policy_digest": policy.digest(),
            "sources": {cfg.name: v.results.get("rlsd", {}) for cfg, v in validations},
        }
        (staging / "validation" / "summary.json").write_text(
            json.dumps(summary, indent=2, sort_keys=True) + "\n"
        )
        tasks = [t for _, v in validations for t in v.tasks]
        verifiers_used = sorted({t.verifier for t in tasks})
        try:
            version = metadata.version("rlsd")
        except metadata.PackageNotFoundError:
            version = "unknown"
        extra = {
            "sources_file": SourcesFileInfo(
                path=str(sources_path), sha256=_sha256_file(sources_path)
            ),
            "sources": [_source_record(cfg, v) for cfg, v in validations],
            "policy": PolicyInfo(
                path=str(policy_path),
                digest=policy.digest(),
                store_privileged_text=policy.store_privileged_text,
                allowed_sources=policy.allowed_sources,
                redaction=[
                    *policy.redaction.builtin,
                    *(c.name for c in policy.redaction.custom),
                ],
            ),
            "split": SplitRule(
                rule="a mapped 'split' column wins; otherwise heldout when "
                "sha256('<salt>:<id>')[:8] / 2**64 < heldout_fraction",
                salt=SPLIT_SALT,
            ),
            "validation": ValidationInfo(
                passed=True,
                quarantined=sum(len(v.quarantined) for _, v in validations),
                summary="validation/summary.json",
            ),
            "verifiers": verifiers_used,
            "rlsd_version": version,
        }
        path, created = write_snapshot(
            tasks,
            out_root,
            name=name or sources_path.stem.replace("_", "-"),
            manifest_extra=extra,
            evidence_dir=staging,
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    # loaded once here, verified like the trainer would, and handed on as it is; an unchanged
    # snapshot is the one on disk (its manifest records the ingestion that first made it)
    snapshot = load_snapshot(path)
    log.info("snapshot %s (%s, %s)", path, snapshot.digest, "new" if created else "unchanged")
    return IngestResult(path, snapshot, created, [v for _, v in validations])
