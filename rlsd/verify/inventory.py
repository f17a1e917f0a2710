"""The verifier inventory: which drop-in verifiers may give rewards, and why the others may not.

:func:`run_inventory` discovers every folder under ``verifiers/``, validates its spec, builds or
checks its image (Docker) or runs its ``prepare`` (local), runs every self-test in the sandbox and
records, per verifier: name, version, spec sha256, image id, backend and a status:

* ``ready``: every self-test behaved as declared and the red-team battery held (no known reward
  hack of its kind passed, and the honest items between the hacks kept their verdicts);
* ``quarantined``: some self-test did not, a hack passed (the reason names it), or the program
  crashed on start: it gives no reward;
* ``invalid``: the spec does not load, the image does not build, or the sandbox cannot run it.

The red-team record (battery size, classes, breaches) is part of each verifier's record, so it
reaches MLflow and the lineage with the rest of the inventory (:mod:`rlsd.verify.redteam`).

:func:`register_inventory` puts the ready verifiers into :mod:`rlsd.verify.registry` as
:class:`ContainerVerifier` (sandboxed rewards behind the ordinary ``Verifier`` interface) and makes
``get_verifier`` raise :class:`VerifierUnavailableError` for the others.
"""

from __future__ import annotations

import datetime as _dt
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from rlsd.verify.backends import make_sandbox
from rlsd.verify.base import VerifyResult, check_batch
from rlsd.verify.redteam import BatteryError, RedTeamRecord, run_redteam
from rlsd.verify.registry import register_verifier
from rlsd.verify.sandbox import Sandbox, SandboxError
from rlsd.verify.spec import (
    SpecError,
    VerifierSpec,
    discover_specs,
    image_digest,
    image_tag,
    load_spec,
    spec_digest,
)

DEFAULT_INVENTORY = Path("runs/verifiers/inventory.json")
Status = Literal["ready", "quarantined", "invalid"]


class VerifierUnavailableError(RuntimeError):
    """The inventory did not mark this verifier ready: it can give no reward."""


class SelfTestOutcome(BaseModel):
    id: str
    expect: Literal["pass", "fail"]
    passed: bool
    score: float
    detail: str
    #: the verifier's own verdict (not a sandbox error such as a timeout or a crash)
    accepted: bool = True
    ok: bool


class VerifierRecord(BaseModel):
    name: str
    folder: str
    version: str | None = None
    description: str | None = None
    owner: str | None = None
    domains: list[str] = Field(default_factory=list)
    spec_sha256: str | None = None
    image: str | None = None
    image_id: str | None = None
    backend: str
    status: Status
    reason: str = ""
    self_tests: list[SelfTestOutcome] = Field(default_factory=list)
    redteam: RedTeamRecord | None = None
    duration_s: float = 0.0


class Inventory(BaseModel):
    created: str
    root: str
    backend: str
    require_docker: bool
    sandbox: str
    verifiers: list[VerifierRecord]

    def get(self, name: str) -> VerifierRecord | None:
        return next((r for r in self.verifiers if r.name == name), None)

    def counts(self) -> dict[str, int]:
        out = {"ready": 0, "quarantined": 0, "invalid": 0}
        for r in self.verifiers:
            out[r.status] += 1
        return out

    def save(self, path: Path | str = DEFAULT_INVENTORY) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.model_dump(), indent=2) + "\n")
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: Path | str = DEFAULT_INVENTORY) -> Inventory:
        return cls.model_validate_json(Path(path).read_text())

    def table(self) -> Any:
        from rich.table import Table

        t = Table(title=f"verifiers in {self.root} ({self.sandbox})")
        for col in (
            "name",
            "version",
            "status",
            "backend",
            "spec sha256",
            "image id",
            "self-tests",
            "red team",
            "reason",
        ):
            t.add_column(col, overflow="fold")
        colours = {"ready": "green", "quarantined": "yellow", "invalid": "red"}
        for r in self.verifiers:
            n_ok = sum(s.ok for s in r.self_tests)
            t.add_row(
                r.name,
                r.version or "—",
                f"[{colours[r.status]}]{r.status}[/]",
                r.backend,
                (r.spec_sha256 or "—")[:12],
                (r.image_id or "—").removeprefix("sha256:")[:12],
                f"{n_ok}/{len(r.self_tests)}" if r.self_tests else "—",
                r.redteam.summary() if r.redteam else "—",
                r.reason[:300],
            )
        return t


def _record_for_error(folder: Path, err: Exception, backend: str) -> VerifierRecord:
    return VerifierRecord(
        name=folder.name, folder=str(folder), backend=backend, status="invalid", reason=str(err)
    )


def check_verifier(
    spec: VerifierSpec, folder: Path, sandbox: Sandbox, *, redteam: bool = True
) -> VerifierRecord:
    """Prepare one verifier, run its honest self-tests, then (when they behave) its red-team
    battery; never raises for the verifier's faults."""
    t0 = time.monotonic()
    rec = VerifierRecord(
        name=spec.name,
        folder=str(folder),
        version=spec.version,
        description=spec.description,
        owner=spec.owner,
        domains=list(spec.domains),
        spec_sha256=spec_digest(folder),
        backend=sandbox.backend,
        status="invalid",
    )
    try:
        prepared = sandbox.prepare(spec, folder, refresh=True)
    except SandboxError as exc:
        rec.reason = str(exc)
        rec.duration_s = round(time.monotonic() - t0, 3)
        return rec
    if sandbox.backend == "docker":
        rec.image = spec.image.ref or image_tag(spec, image_digest(folder))
        rec.image_id = prepared
    honest = spec.honest_tests()
    try:
        results = sandbox.run_batch(spec, folder, [{**t.item, "id": t.id} for t in honest])
    except SandboxError as exc:
        rec.reason = f"self-tests could not run: {exc}"
        rec.duration_s = round(time.monotonic() - t0, 3)
        return rec
    problems = []
    for test, res in zip(honest, results, strict=True):
        ok = res.meets(test.expect)
        rec.self_tests.append(
            SelfTestOutcome(
                id=test.id,
                expect=test.expect,
                passed=res.passed,
                score=res.score,
                detail=res.detail,
                accepted=res.accepted,
                ok=ok,
            )
        )
        if not ok:
            got = ("pass" if res.passed else "fail") if res.accepted else "no verdict"
            problems.append(
                f"self-test {test.id!r} expected {test.expect}, got {got}: {res.detail[:300]}"
            )
    if not problems and redteam:
        try:
            rec.redteam = run_redteam(spec, folder, sandbox)
        except (SandboxError, BatteryError) as exc:
            problems.append(f"red team could not run: {exc}")
        else:
            problems += [f"red team: hack {b} PASSED" for b in rec.redteam.breaches]
            problems += [
                f"red team: an honest item went wrong among the hacks: {c}"
                for c in rec.redteam.failed_controls
            ]
    rec.status = "quarantined" if problems else "ready"
    rec.reason = "; ".join(problems)
    rec.duration_s = round(time.monotonic() - t0, 3)
    return rec


def run_inventory(
    root: Path | str = "verifiers",
    backend: str = "auto",
    require_docker: bool = False,
    *,
    out: Path | str | None = DEFAULT_INVENTORY,
    sandbox: Sandbox | None = None,
) -> Inventory:
    """Discover, validate, build / check and self-test every verifier under ``root``.

    Raises :class:`~rlsd.verify.sandbox.SandboxUnavailable` when no sandbox may run (e.g. no
    engine while ``require_docker``). Writes the JSON to ``out`` unless it is None.
    """
    owned = sandbox is None
    sandbox = sandbox or make_sandbox(backend, require_docker=require_docker, prestart=0)
    records = []
    try:
        for folder, found in discover_specs(root):
            if isinstance(found, SpecError):
                records.append(_record_for_error(folder, found, sandbox.backend))
                continue
            records.append(check_verifier(found, folder.resolve(), sandbox))
    finally:
        if owned:
            sandbox.close()
    inv = Inventory(
        created=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        root=str(root),
        backend=backend,
        require_docker=require_docker,
        sandbox=sandbox.describe(),
        verifiers=records,
    )
    if out is not None:
        inv.save(out)
    return inv


class ContainerVerifier:
    """A drop-in verifier behind the ``Verifier`` protocol: each batch runs in the sandbox.

    Items are ``{"id", "response", "reference": task.answer, "task_id", "metadata"}``; the
    privileged context never leaves the trainer.
    """

    def __init__(
        self,
        spec: VerifierSpec,
        folder: Path | str,
        sandbox: Sandbox,
        *,
        max_batch_items: int = 256,
    ) -> None:
        self.name = spec.name
        self.spec = spec
        self.folder = Path(folder)
        self.sandbox = sandbox
        self.max_batch_items = max(1, max_batch_items)

    def __repr__(self) -> str:
        return f"ContainerVerifier({self.name!r}, backend={self.sandbox.backend!r})"

    def verify(self, responses: Sequence[str], tasks: Sequence[Any]) -> list[VerifyResult]:
        check_batch(responses, tasks)
        items = [
            {
                "id": str(i),
                "response": r if isinstance(r, str) else str(r),
                "reference": getattr(t, "answer", None),
                "task_id": getattr(t, "id", None),
                "metadata": getattr(t, "metadata", {}) or {},
            }
            for i, (r, t) in enumerate(zip(responses, tasks, strict=True))
        ]
        if not items:
            return []
        n = self.max_batch_items
        batches = [items[i : i + n] for i in range(0, len(items), n)]
        results = [x for b in self.sandbox.run_many(self.spec, self.folder, batches) for x in b]
        return [
            VerifyResult(passed=x.passed, score=x.score, detail=f"[{x.backend}] {x.detail}")
            for x in results
        ]


def _unavailable(rec: VerifierRecord, why: str):
    def factory(**_: Any) -> Any:
        raise VerifierUnavailableError(why)

    return factory


def register_inventory(inventory: Inventory, sandbox: Sandbox | None = None) -> dict[str, str]:
    """Register the READY verifiers (replacing same-named ones); the others raise on lookup.

    A ready verifier whose folder changed since the inventory is not registered as ready: its
    lookup raises until the inventory is run again. Returns name -> what was registered.
    """
    sandboxes: dict[str, Sandbox] = {}
    out = {}
    for rec in inventory.verifiers:
        if rec.status != "ready":
            why = (
                f"verifier {rec.name!r} is {rec.status} in the inventory of {inventory.created} "
                f"and can give no reward: {rec.reason or 'no reason recorded'}"
            )
            register_verifier(rec.name, _unavailable(rec, why), replace=True)
            out[rec.name] = rec.status
            continue
        folder = Path(rec.folder)
        try:
            spec = load_spec(folder)
            digest = spec_digest(folder)
        except (SpecError, OSError) as exc:
            digest, spec, err = None, None, exc
        else:
            err = None
        if spec is None or digest != rec.spec_sha256:
            why = (
                f"verifier {rec.name!r} changed since the inventory of {inventory.created} "
                f"({err or 'spec sha256 differs'}): run `rlsd verifiers inventory` again"
            )
            register_verifier(rec.name, _unavailable(rec, why), replace=True)
            out[rec.name] = "stale"
            continue
        sb = sandbox
        if sb is None:
            key = "docker" if rec.backend == "docker" else "local"
            if key not in sandboxes:
                sandboxes[key] = make_sandbox(key, require_docker=inventory.require_docker)
            sb = sandboxes[key]

        def factory(_spec=spec, _folder=folder, _sb=sb, **options: Any) -> ContainerVerifier:
            if options:
                raise TypeError(
                    f"container verifier {_spec.name!r} takes no options (got {sorted(options)})"
                )
            return ContainerVerifier(_spec, _folder, _sb)

        register_verifier(rec.name, factory, replace=True)
        out[rec.name] = "ready"
    return out
