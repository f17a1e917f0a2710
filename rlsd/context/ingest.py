"""Ingestion: declared sources -> policy check -> validation and redaction -> a snapshot.

``ingest`` is what ``rlsd ingest`` and the pipeline's ``ingest_context`` stage call. A source the
data policy does not allow is refused before anything is read; a source above its bad-row
threshold stops the ingestion (its evidence is kept under ``<out>/failed/``); otherwise the
redacted tasks of every source become one versioned snapshot (:mod:`rlsd.context.snapshot`).

Every error that leaves ingestion names its source and quotes no row value, database message or
credential (:class:`~rlsd.context.reader.IngestError`; database errors are reduced to their class
and kind by the reader, anything else a source raises to its class here).

The snapshot's digest covers its tasks; the quarantine is evidence *about* an ingestion, and is
versioned by its own digest (:func:`quarantine_digest`). Re-ingesting the same tasks reuses the
snapshot; if the quarantine differs -- new bad rows appeared, old ones were deleted -- this
ingestion's evidence is kept beside it, in ``<out>/evidence/<snapshot>/<quarantine digest12>/``
(``validation/``, ``quarantine/``, ``evidence.json``), and the result says "tasks unchanged,
quarantine changed" and points at it: new bad rows are never recorded nowhere.
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

from rlsd.context.config import SourceConfig, SourceConfigError, load_sources
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
from rlsd.context.reader import SPLIT_SALT, IngestError, quarantine_record
from rlsd.context.snapshot import Snapshot, load_snapshot, write_snapshot
from rlsd.context.validation import IngestionPolicyError, SourceValidation, validate_source
from rlsd.uris import mask_uri

log = logging.getLogger(__name__)

#: Beside the snapshots: evidence of ingestions whose tasks matched an existing snapshot but
#: whose quarantine did not.
EVIDENCE_DIR = "evidence"
NEW, UNCHANGED = "new", "unchanged"
QUARANTINE_CHANGED = "tasks unchanged, quarantine changed"


@dataclass
class IngestResult:
    """What an ingestion produced: the snapshot, loaded (manifest and tasks, handed on to the
    trainer as they are), whether it is new, each source's validation, and where this
    ingestion's own evidence (validation results, quarantine) is."""

    #: the snapshot folder, ``<out_root>/<name>-<digest12>``
    path: Path
    snapshot: Snapshot
    #: False when a snapshot with the same content digest already existed (it was kept)
    created: bool
    validations: list[SourceValidation]
    #: the folder holding this ingestion's ``validation/`` and ``quarantine/``: the snapshot's
    #: own, or (tasks unchanged, quarantine changed) ``<out>/evidence/<snapshot>/<digest12>``
    evidence: Path | None = None
    #: :func:`quarantine_digest` of this ingestion's quarantine
    quarantine_sha256: str = ""
    #: NEW, UNCHANGED or QUARANTINE_CHANGED
    status: str = ""

    def __post_init__(self) -> None:
        if self.evidence is None:
            self.evidence = self.path
        if not self.status:
            self.status = NEW if self.created else UNCHANGED

    @property
    def quarantined(self) -> int:
        """Rows this ingestion quarantined (the snapshot's manifest counts its first one's)."""
        return sum(len(v.quarantined) for v in self.validations)


def quarantine_digest(folder: Path) -> str:
    """sha256 over ``folder/quarantine/*.jsonl`` (names and bytes, in name order): what tells
    one ingestion's quarantine evidence from another's, as the content digest does its tasks."""
    h = hashlib.sha256()
    qdir = folder / "quarantine"
    for p in sorted(qdir.glob("*.jsonl")) if qdir.is_dir() else []:
        h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
    return "sha256:" + h.hexdigest()


def _keep_evidence(staging: Path, out_root: Path, snapshot: Path, q_digest: str, n: int) -> Path:
    """This ingestion's evidence, kept beside an existing snapshot (once per digest)."""
    final = out_root / EVIDENCE_DIR / snapshot.name / q_digest.removeprefix("sha256:")[:12]
    if (final / "evidence.json").exists():
        return final  # the same quarantine was recorded by an earlier ingestion
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".evidence-", dir=final.parent))
    try:
        for sub in ("validation", "quarantine"):
            if (staging / sub).exists():
                shutil.copytree(staging / sub, tmp / sub)
        record = {
            "snapshot": snapshot.name,
            "status": QUARANTINE_CHANGED,
            "quarantine_sha256": q_digest,
            "quarantined": n,
            "created_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        }
        (tmp / "evidence.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        tmp.rename(final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (final / "evidence.json").exists():  # not a concurrent twin that won the rename
            raise
    return final


def _validate_one(
    cfg: SourceConfig,
    known: list[str],
    out_dir: Path,
    policy: PrivilegedContextPolicy,
    variables: Mapping[str, str] | None,
) -> SourceValidation:
    """:func:`validate_source`, its errors naming the source and quoting nothing raw."""
    failure: IngestError | None = None
    try:
        return validate_source(cfg, known, out_dir=out_dir, policy=policy, variables=variables)
    except (IngestError, SourceConfigError):
        raise  # they name the source and carry no row text already
    except Exception as exc:  # noqa: BLE001 - pandas / GE / driver messages may quote values
        failure = IngestError(
            f"source {cfg.name!r}: {type(exc).__name__} while validating (its message is "
            "withheld, as it may quote row values; run validate_source on this source alone "
            "to debug)",
            source=cfg.name,
        )
    raise failure  # outside the handler: no __context__ to carry the original along


def _sha256_file(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def _source_record(cfg: SourceConfig, v: SourceValidation) -> SourceRecord:
    query = cfg.query if cfg.query is not None else f"TABLE {cfg.table}"
    return SourceRecord(
        name=cfg.name,
        # The ${ENV} template, not the resolved URL: it tells a reader which variable holds the
        # secret, and reads the same wherever the snapshot was made. Validation refused any
        # literal password; masking again covers a config built without validation.
        url=mask_uri(cfg.url),
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
                v = _validate_one(cfg, known, staging / "validation", policy, variables)
                validations.append((cfg, v))
                if on_source is not None:
                    on_source(cfg.name, v)
        except IngestionPolicyError as exc:
            stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")
            failed = out_root / "failed" / stamp
            failed.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(staging), failed)
            raise IngestionPolicyError(
                f"{exc}\nvalidation evidence kept in {failed}", source=exc.source
            ) from None

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
        q_digest = quarantine_digest(staging)
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
                quarantine_sha256=q_digest,  # evidence identity (the digest covers the tasks)
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
        evidence, status = path, NEW if created else UNCHANGED
        n_quarantined = sum(len(v.quarantined) for _, v in validations)
        if not created and quarantine_digest(path) != q_digest:
            evidence = _keep_evidence(staging, out_root, path, q_digest, n_quarantined)
            status = QUARANTINE_CHANGED
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    # loaded once here, verified like the trainer would, and handed on as it is; an unchanged
    # snapshot is the one on disk (its manifest records the ingestion that first made it)
    snapshot = load_snapshot(path)
    if status == QUARANTINE_CHANGED:
        log.warning(
            "snapshot %s (%s): %s -- %d row(s) quarantined now; this ingestion's evidence is in %s",
            path, snapshot.digest, status, n_quarantined, evidence,
        )  # fmt: skip
    else:
        log.info("snapshot %s (%s, %s)", path, snapshot.digest, status)
    return IngestResult(
        path, snapshot, created, [v for _, v in validations], evidence=evidence,
        quarantine_sha256=q_digest, status=status,
    )  # fmt: skip
