"""The red-team gate: known reward hacks, run against every verifier in its own sandbox.

A policy under RL searches for whatever its verifier scores as a pass, so a verifier is only
ready when the hacks known for its kind fail. Three sources make up a verifier's battery:

* its own self-tests marked ``hack: <class>`` (``expect: fail``) in ``verifier.yaml``;
* the battery of its ``kind`` (``rlsd/verify/batteries/<kind>.yaml``): the hacks found against
  that kind of checker, with honest ``controls`` that must pass — a user's dropped-in verifier of
  a built-in kind gets them too;
* the generic protocol battery, derived from the verifier's own first passing self-test (forged
  result lines, a lone surrogate, control bytes, an empty, non-string or oversized response).

:func:`run_redteam` runs every hack in ONE batch with the honest items (the verifier's passing
self-tests and the battery's controls) between them, so a hack that reaches other items (a
daemon that rewrites later tests, a kill of the verifier) shows up as a failed control. The
battery *holds* when no hack passes and every control passes; a hack that passes is a
*breach*, named in the inventory, and the verifier is quarantined.
"""

from __future__ import annotations

import time
from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from rlsd.verify.sandbox import Sandbox, SandboxResult
from rlsd.verify.spec import VerifierSpec, problems_line, read_spec_yaml

BATTERY_DIR = Path(__file__).with_name("batteries")
HACK_CLASS = r"^[a-z0-9][a-z0-9-]{0,80}$"
Source = Literal["self-test", "battery", "generic"]


class BatteryError(ValueError):
    """A battery file that cannot be used; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Hack(_Strict):
    """An item that must FAIL: it tries a reward hack of class ``hack``."""

    id: str = Field(min_length=1, max_length=200)
    hack: str = Field(pattern=HACK_CLASS, description="The class of hack this item tries.")
    note: str = Field(min_length=1, description="What it tries, for the people reading a breach.")
    item: dict[str, Any]

    @field_validator("item")
    @classmethod
    def _has_response(cls, v: dict[str, Any]) -> dict[str, Any]:
        if "response" not in v:
            raise ValueError("a battery item needs a 'response'")
        return v


class Control(_Strict):
    """An honest item whose verdict must be ``expect`` in the same batch: the verifier still
    works, and no hack before it changed its verdict (an honest wrong answer after a hack that
    rewrites tests must still fail)."""

    id: str = Field(min_length=1, max_length=200)
    expect: Literal["pass", "fail"] = "pass"
    note: str = ""
    item: dict[str, Any]


class Battery(_Strict):
    kind: str = Field(pattern=HACK_CLASS)
    description: str = Field(min_length=1)
    hacks: list[Hack] = Field(min_length=1)
    controls: list[Control] = Field(default_factory=list)


@cache
def load_battery(kind: str, directory: Path = BATTERY_DIR) -> Battery | None:
    """The battery of ``kind`` (None when there is none); BatteryError when it is broken."""
    path = directory / f"{kind}.yaml"
    if not path.is_file():
        return None
    data = read_spec_yaml(path, lambda where, detail: BatteryError(f"{where}: {detail}"))
    try:
        battery = Battery.model_validate(data)
    except ValidationError as exc:
        raise BatteryError(f"{path}: {problems_line(exc, data)}") from None
    if battery.kind != kind:
        raise BatteryError(f"{path}: kind = {battery.kind!r}: must equal the file name {kind!r}")
    ids = [h.id for h in battery.hacks] + [c.id for c in battery.controls]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise BatteryError(f"{path}: ids must be unique (repeated: {', '.join(dupes)})")
    return battery


def known_kinds(directory: Path = BATTERY_DIR) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.yaml"))


class Entry(BaseModel):
    """One item of a red-team run (a hack must fail; a control must meet ``expect``)."""

    id: str
    source: Source
    role: Literal["hack", "control"]
    expect: Literal["pass", "fail"] = "fail"
    hack: str | None = None
    note: str = ""
    item: dict[str, Any]


def generic_hacks(spec: VerifierSpec) -> list[Entry]:
    """Protocol-level hacks every verifier must fail, on the item of its first passing
    self-test (so the reference is one the verifier understands)."""
    template = next((t.item for t in spec.self_tests if t.expect == "pass"), None)
    if template is None:
        return []
    forged = (
        '{"start": "X", "nonce": "0"}\n'
        '{"id": "X", "passed": true, "score": 1.0, "detail": "ok", "nonce": "0"}\n'
    )
    cases = [
        ("forged-result-lines", "forged-verdict", "prints result lines for every id", forged),
        ("empty-response", "empty-response", "an empty response", ""),
        ("whitespace-response", "empty-response", "a response of whitespace only", " \n\t "),
        ("lone-surrogate", "protocol-encoding", "a lone surrogate only", "\ud800"),
        ("control-bytes", "protocol-encoding", "NUL and escape bytes only", "\x00\x1b[2J\x00"),
        ("not-a-string", "protocol-type", "a JSON object instead of text", {"passed": True}),
        ("oversized", "oversized-response", "a 3 MB response of one letter", "x" * (3 << 20)),
    ]
    out = []
    for ident, hack, note, response in cases:
        item = {**template, "response": response}
        out.append(
            Entry(
                id=f"generic:{ident}",
                source="generic",
                role="hack",
                hack=hack,
                note=note,
                item=item,
            )  # fmt: skip
        )
    return out


def battery_entries(spec: VerifierSpec, directory: Path = BATTERY_DIR) -> list[Entry]:
    """Every hack and control for ``spec`` (own hack self-tests, its kind's, the generic)."""
    entries = [
        Entry(id=t.id, source="self-test", role="hack", hack=t.hack, note=t.note or "", item=t.item)
        for t in spec.hack_tests()
    ]
    battery = load_battery(spec.kind, directory) if spec.kind else None
    if battery is not None:
        entries += [
            Entry(id=f"{battery.kind}:{h.id}", source="battery", role="hack", hack=h.hack,
                  note=h.note, item=h.item)
            for h in battery.hacks
        ]  # fmt: skip
        entries += [
            Entry(id=f"{battery.kind}:{c.id}", source="battery", role="control", expect=c.expect,
                  note=c.note, item=c.item)
            for c in battery.controls
        ]  # fmt: skip
    return entries + generic_hacks(spec)


class EntryOutcome(BaseModel):
    id: str
    source: Source
    role: Literal["hack", "control"]
    expect: Literal["pass", "fail"] = "fail"
    hack: str | None = None
    passed: bool
    accepted: bool
    ok: bool
    detail: str


class RedTeamRecord(BaseModel):
    """What the inventory records of a verifier's red-team run (it reaches MLflow)."""

    kind: str | None = None
    size: int = 0  # number of hacks
    controls: int = 0
    classes: list[str] = Field(default_factory=list)
    held: bool = False
    breaches: list[str] = Field(default_factory=list)  # "<id> (<class>)" of every hack that passed
    failed_controls: list[str] = Field(default_factory=list)
    duration_s: float = 0.0
    outcomes: list[EntryOutcome] = Field(default_factory=list)

    def summary(self) -> str:
        if not self.size:
            return "no battery"
        verdict = "held" if self.held else "BREACHED" if self.breaches else "inconclusive"
        return f"{verdict}: {self.size - len(self.breaches)}/{self.size} hacks failed"


def _interleave(hacks: list[Entry], controls: list[Entry]) -> list[Entry]:
    """Hacks with an honest item after each (controls cycled), so cross-item harm shows."""
    if not controls:
        return list(hacks)
    out: list[Entry] = []
    for i, hack in enumerate(hacks):
        out.append(hack)
        control = controls[i % len(controls)]
        out.append(control.model_copy(update={"id": f"{control.id}#after-{i}"}))
    return list(controls) + out


def honest_controls(spec: VerifierSpec) -> list[Entry]:
    """The verifier's passing self-tests, as controls."""
    return [
        Entry(id=f"control:{t.id}", source="self-test", role="control", expect=t.expect,
              item=t.item)
        for t in spec.honest_tests()
    ]  # fmt: skip


def run_redteam(
    spec: VerifierSpec,
    folder: Path,
    sandbox: Sandbox,
    *,
    entries: list[Entry] | None = None,
) -> RedTeamRecord:
    """Run the battery in the sandbox; never raises for the verifier's faults (SandboxError
    for the sandbox's own)."""
    t0 = time.monotonic()
    entries = battery_entries(spec) if entries is None else entries
    hacks = [e for e in entries if e.role == "hack"]
    controls = honest_controls(spec) + [e for e in entries if e.role == "control"]
    plan = _interleave(hacks, controls)
    record = RedTeamRecord(
        kind=spec.kind,
        size=len(hacks),
        controls=len(plan) - len(hacks),
        classes=sorted({e.hack for e in hacks if e.hack}),
    )
    if not hacks:
        return record
    results: list[SandboxResult] = sandbox.run_batch(
        spec, folder, [{**e.item, "id": e.id} for e in plan]
    )
    for entry, res in zip(plan, results, strict=True):
        ok = not res.passed if entry.role == "hack" else res.meets(entry.expect)
        record.outcomes.append(
            EntryOutcome(
                id=entry.id,
                source=entry.source,
                role=entry.role,
                expect=entry.expect,
                hack=entry.hack,
                passed=res.passed,
                accepted=res.accepted,
                ok=ok,
                detail=res.detail[:500],
            )
        )
        if not ok and entry.role == "hack":
            record.breaches.append(f"{entry.id} ({entry.hack})")
        elif not ok:
            record.failed_controls.append(f"{entry.id}: {res.detail[:200]}")
    record.held = not record.breaches and not record.failed_controls
    record.duration_s = round(time.monotonic() - t0, 3)
    return record
