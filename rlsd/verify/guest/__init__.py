"""Modules that run inside verifier sandboxes, one source each, copied into the verifiers' builds.

A verifier lists the ones it imports under ``shared:`` in its ``verifier.yaml``; before its image
is built (Docker) or its folder is run (the local sandbox), :func:`install_shared` copies each into
the folder's ``build/``, which the verifier's Dockerfile COPYs to ``/verifier`` beside
``verify.py``. Their content is part of the verifier's spec digest
(:func:`rlsd.verify.spec.spec_digest`), so a changed shared module gives a new image tag and makes
an inventory stale. The modules themselves use the standard library only (the base image has
nothing else); rlsd imports none of them except ``answer_extraction``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

GUEST_DIR = Path(__file__).resolve().parent
#: The shared modules a verifier may list under ``shared:``: module name -> its one source.
#: ``answer_extraction`` is also the in-process math checker's (rlsd.verify.math_answer), so the
#: container and the in-process checker run the same code.
SHARED_MODULES: dict[str, Path] = {
    "answer_extraction": GUEST_DIR.parent / "answer_extraction.py",
    "json_payload": GUEST_DIR / "json_payload.py",
    "verifier_protocol": GUEST_DIR / "verifier_protocol.py",
}


def shared_source(name: str) -> Path:
    """The one source file of shared module ``name``."""
    if name not in SHARED_MODULES:
        raise ValueError(f"unknown shared module {name!r} (known: {', '.join(SHARED_MODULES)})")
    return SHARED_MODULES[name]


def install_shared(names: list[str], folder: Path) -> list[Path]:
    """Copy the shared modules ``names`` into ``<folder>/build/`` (atomically, world-readable:
    the sandbox user must read them); return the copies."""
    if not names:
        return []
    build = folder / "build"
    build.mkdir(exist_ok=True)
    out = []
    for name in names:
        dest = build / f"{name}.py"
        tmp = build / f".{name}.py.tmp"
        shutil.copyfile(shared_source(name), tmp)
        tmp.chmod(0o644)
        tmp.replace(dest)
        out.append(dest)
    shutil.rmtree(build / "__pycache__", ignore_errors=True)  # never ship stale bytecode
    return out
