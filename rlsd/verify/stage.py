"""The inventory stage: build, check, self-test and red-team every verifier, register the ready
ones in this process, and say what was found (the MLflow record is
:func:`rlsd.tracking.records.record_inventory`)."""

from __future__ import annotations

import logging
from pathlib import Path

from pydantic import BaseModel

from rlsd.tables import TextTable
from rlsd.verify.inventory import Inventory, register_inventory, run_inventory

log = logging.getLogger("rlsd.verify")


class InventoryOutcome(BaseModel):
    path: str  # inventory.json
    inventory: Inventory

    @property
    def sandbox(self) -> str:
        """The inventory's sandbox description, e.g. ``docker (engine 20.10, ...)``."""
        return self.inventory.sandbox

    @property
    def sandbox_kind(self) -> str:
        return "docker" if self.sandbox.startswith("docker") else self.sandbox.split()[0]

    @property
    def statuses(self) -> dict[str, str]:
        return {r.name: r.status for r in self.inventory.verifiers}

    def table(self) -> TextTable:
        rows = [
            [r.name, r.version or "", r.status, r.backend, (r.spec_sha256 or "")[:12],
             (r.image_id or "").removeprefix("sha256:")[:12],
             f"{sum(s.ok for s in r.self_tests)}/{len(r.self_tests)}",
             r.redteam.summary() if r.redteam else "not run", r.reason[:120]]
            for r in self.inventory.verifiers
        ]  # fmt: skip
        headers = ["verifier", "version", "status", "backend", "spec sha256", "image",
                   "self-tests", "red team", "reason"]  # fmt: skip
        return TextTable(headers, rows, "Verifier inventory", frozenset({"verifier", "reason"}))

    def markdown(self) -> str:
        return (
            f"### Verifier inventory\n\nSandbox: **{self.sandbox}**\n\n" + self.table().markdown()
        )


def take_inventory(root: Path, backend: str, require_docker: bool, out: Path) -> InventoryOutcome:
    """Every verifier under ``root`` checked in the sandbox; the ready ones registered here."""
    from rlsd.verify.backends import prepare_backend

    if backend != "local":
        backend = prepare_backend(backend, require_docker)
    inv = run_inventory(root, backend=backend, require_docker=require_docker, out=out)
    register_inventory(inv)
    if not inv.sandbox.startswith("docker"):
        log.warning(
            "NO DOCKER ENGINE: verifiers run in the LOCAL sandbox (%s), not in containers; "
            "the gate records this",
            inv.sandbox,
        )
    return InventoryOutcome(path=str(out), inventory=inv)
