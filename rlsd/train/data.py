"""Where a run's tasks come from: a task generator, or a snapshot made by ``rlsd ingest``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlsd.tasks import Task, generate_tasks
from rlsd.train.config import TaskConfig

if TYPE_CHECKING:
    from rlsd.context.snapshot import Snapshot


class DatasetError(ValueError):
    """The configured dataset cannot feed this run; the message says what to change."""


@dataclass
class RunTasks:
    train: list[Task]
    heldout: list[Task]
    #: what the run records about its data: generator settings or snapshot path and digest
    lineage: dict[str, Any] = field(default_factory=dict)
    #: where the tasks' images are (content-addressed); empty for text tasks
    image_stores: list[Any] = field(default_factory=list)


def load_run_tasks(cfg: TaskConfig, snapshot: Snapshot | None = None) -> RunTasks:
    """The run's tasks: from ``snapshot`` when one is given (already loaded, e.g. by the ingest
    stage), else from the snapshot at ``cfg.dataset``, else from ``cfg.generator``."""
    if snapshot is None and cfg.dataset is None:
        gen_cfg = getattr(cfg, cfg.generator)
        train, heldout = generate_tasks(cfg.generator, gen_cfg)
        stores = []
        if any(t.images for t in train + heldout):
            from rlsd.tasks.images import ImageStore, default_image_store

            image_dir = getattr(gen_cfg, "image_dir", None)
            stores = [ImageStore(image_dir) if image_dir else default_image_store()]
        return RunTasks(train, heldout, {"generator": cfg.generator}, stores)
    if snapshot is not None:
        snap = snapshot
    else:
        from rlsd.context.snapshot import load_snapshot

        snap = load_snapshot(cfg.dataset)
    domains = cfg.domains
    if domains:
        unknown = sorted(set(domains) - set(snap.domains))
        if unknown:
            raise DatasetError(
                f"task.domains: {unknown} not in snapshot {snap.path} (it has {snap.domains})"
            )
    train, heldout = snap.split("train", domains), snap.split("heldout", domains)
    if not train:
        raise DatasetError(
            f"task.dataset {snap.path}: no training tasks"
            + (f" in domains {domains}" if domains else "")
            + f"; its counts per domain: {_domain_counts(snap)}"
        )
    lineage = {
        "dataset": str(snap.path),
        # recomputed from the files at load (not the manifest's claim): what a resume compares
        "digest": snap.content_digest,
        "domains": domains or snap.domains,
        "train": len(train),
        "heldout": len(heldout),
    }
    return RunTasks(train, heldout, lineage, [snap.image_store])


def resume_dataset_problem(
    lineage: Mapping[str, Any], checkpoint_state: Mapping[str, Any], dataset_file: Path
) -> str | None:
    """Why a run must not resume on the data in ``lineage``, or None.

    The digest the checkpoint recorded (its own copy, rewritten by nobody after the step) and
    the one in the run folder's ``dataset.json`` must both be the digest recomputed from the
    configured snapshot now. A checkpoint written before it recorded the digest, or a run folder
    without ``dataset.json``, has nothing to compare on that side."""
    now = lineage.get("digest")
    recorded: list[tuple[str, Any]] = []
    if "dataset_digest" in checkpoint_state:
        recorded.append(("its checkpoint", checkpoint_state["dataset_digest"]))
    if dataset_file.exists():
        try:
            saved = json.loads(dataset_file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            return f"{dataset_file} is unreadable ({exc}); cannot tell what the run trained on"
        recorded.append(
            (str(dataset_file), saved.get("digest") if isinstance(saved, dict) else None)
        )
    for where, then in recorded:
        if then != now:
            return (
                f"it trained on dataset digest {then} (recorded in {where}), the configured "
                f"dataset {lineage.get('dataset', '(generated)')} has {now}, recomputed from "
                "its content: the data changed since the run started"
            )
    return None


def _domain_counts(snap: Snapshot) -> dict[str, dict[str, int]]:
    return {d: c.model_dump() for d, c in snap.manifest.counts.by_domain.items()}


def eval_subset(tasks: list[Task], n: int) -> list[Task]:
    """The first ``n`` held-out tasks, taken round-robin across domains (in id order within
    each), so a mixed snapshot's evaluation covers every domain, not the first alphabetically."""
    groups: dict[str, list[Task]] = {}
    for t in tasks:
        groups.setdefault(str(t.metadata.get("domain", "")), []).append(t)
    if len(groups) <= 1:
        return tasks[:n]
    out: list[Task] = []
    queues = [list(g) for _, g in sorted(groups.items())]
    while len(out) < n and any(queues):
        for q in queues:
            if q and len(out) < n:
                out.append(q.pop(0))
    return out
