"""Vendor a pinned, hash-checked ``jsonschema`` (and its dependencies) into ``build/``.

The base image ships Debian's python3-jsonschema 4.10, which misses parts of drafts 2019-09 and
2020-12 (``$dynamicRef``, ``$recursiveRef``, ``unevaluatedItems``, ``enum: [[false]]`` taking
``[0]``). The verifier claims every draft it passes the official JSON-Schema-Test-Suite for, so
it runs on this pinned copy instead: ``build/`` is copied to ``/verifier/`` by the Dockerfile and
``verify.py`` puts ``vendor.zip`` and its own folder first on ``sys.path``.

Only wheels are taken (``--only-binary :all:``), for CPython 3.11 on manylinux of this machine's
architecture (``rpds-py`` is compiled), each pinned by version and sha256 (``--require-hashes``).
Layout, flat so that every file sits directly in ``/verifier`` (the local sandbox binds files one
by one and the folders it makes for nested paths are not readable by the sandbox user):

* ``build/vendor.zip``: the pure-Python packages with their ``*.dist-info`` (zipimport);
* ``build/rpds.cpython-311-<arch>-linux-gnu.so``: rpds-py's extension, imported as the
  top-level module ``rpds`` (its package ``__init__`` only re-exports it);
* ``build/rlsd-vendor.json``: what was installed (pins, platform).

The result is cached: when ``build/`` holds the install of exactly these pins for this
architecture, nothing is done.
``RLSD_JSONSCHEMA_WHEELS=/dir/of/wheels`` installs from a local folder of the same wheels
(offline; the hashes are still checked). Run with the rlsd venv's python (any Python with pip).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
BUILD = HERE / "build"
ZIP = BUILD / "vendor.zip"
STAMP = "rlsd-vendor.json"
PYTHON_VERSION = "3.11"
MANYLINUX = "manylinux_2_17"

# name==version and the sha256 of its wheel (two for rpds-py: x86_64 and aarch64).
PINS = {
    "jsonschema==4.26.0": [
        "d489f15263b8d200f8387e64b4c3a75f06629559fb73deb8fdfb525f2dab50ce",
    ],
    "attrs==26.1.0": [
        "c647aa4a12dfbad9333ca4e71fe62ddc36f4e63b2d260a37a8b83d2f043ac309",
    ],
    "jsonschema-specifications==2025.9.1": [
        "98802fee3a11ee76ecaca44429fda8a41bff98b00a0f2838151b113f210cc6fe",
    ],
    "referencing==0.37.0": [
        "381329a9f99628c9069361716891d34ad94af76e461dcb0335825aecc7692231",
    ],
    "rpds-py==2026.9.1": [
        "136a1c3fe4402b7008bc81cb62ee538481795b61a7e83df88dff3b3f02b726ff",  # x86_64
        "e01b3c878c8641913e688edd1b3f08658c6783d29cf6b826bd3c0d1ae7a1ffaa",  # aarch64
    ],
    "typing-extensions==4.16.0": [
        "481caa481374e813c1b176ada14e97f1f67a4539ce9cfeb3f350d78d6370c2e8",
    ],
}


def log(msg: str) -> None:
    print(f"prepare(json-schema): {msg}", file=sys.stderr)


def arch() -> str:
    machine = platform.machine().lower()
    aliases = {"amd64": "x86_64", "arm64": "aarch64"}
    machine = aliases.get(machine, machine)
    if machine not in ("x86_64", "aarch64"):
        raise SystemExit(f"prepare: no pinned rpds-py wheel for architecture {machine!r}")
    return machine


def requirements() -> str:
    lines = []
    for pin, hashes in PINS.items():
        lines.append(pin + "".join(f" --hash=sha256:{h}" for h in hashes))
    return "\n".join(lines) + "\n"


def wanted(machine: str) -> dict:
    return {"pins": sorted(PINS), "platform": f"{MANYLINUX}_{machine}", "python": PYTHON_VERSION}


def is_current(machine: str) -> bool:
    try:
        stamp = json.loads((BUILD / STAMP).read_text())
    except (OSError, ValueError):
        return False
    return (
        stamp == wanted(machine) and ZIP.is_file() and (BUILD / extension_name(machine)).is_file()
    )


def extension_name(machine: str) -> str:
    return f"rpds.cpython-311-{machine}-linux-gnu.so"


def write_zip(tree: Path, dest: Path) -> None:
    """A deterministic zip of ``tree`` (sorted names, fixed times), without rpds' package."""
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(tree.rglob("*")):
            rel = path.relative_to(tree).as_posix()
            if not path.is_file() or rel.startswith("rpds/") or "__pycache__" in rel:
                continue
            info = zipfile.ZipInfo(rel, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, path.read_bytes())


def install(machine: str) -> None:
    BUILD.mkdir(exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".vendor-", dir=BUILD))
    try:
        req = staging / "requirements.txt"
        req.write_text(requirements())
        target = staging / "tree"
        cmd = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "-q"]
        cmd += ["--target", str(target), "--no-compile", "--only-binary", ":all:"]
        cmd += ["--python-version", PYTHON_VERSION, "--implementation", "cp", "--abi", "cp311"]
        cmd += ["--platform", f"{MANYLINUX}_{machine}", "--require-hashes", "-r", str(req)]
        local = os.environ.get("RLSD_JSONSCHEMA_WHEELS")
        if local:
            cmd += ["--no-index", "--find-links", local]
            log(f"installing the pinned wheels from {local}")
        else:
            log("downloading the pinned wheels: " + ", ".join(PINS))
        done = subprocess.run(cmd, stdout=sys.stderr, env={**os.environ, "PIP_NO_INPUT": "1"})
        if done.returncode != 0:
            raise SystemExit(f"prepare: pip install failed (exit {done.returncode})")
        extension = target / "rpds" / extension_name(machine)
        if not extension.is_file():
            raise SystemExit(f"prepare: the rpds-py wheel has no {extension.name}")
        write_zip(target, staging / ZIP.name)
        for old in (BUILD / STAMP, BUILD / "vendor"):  # the stamp goes last, the old tree away
            if old.is_dir():
                shutil.rmtree(old)
            elif old.exists():
                old.unlink()
        for stale in BUILD.glob("rpds.*.so"):
            stale.unlink()
        shutil.copyfile(extension, staging / extension.name)
        for name in (ZIP.name, extension.name):
            (staging / name).chmod(0o755 if name.endswith(".so") else 0o644)
            (staging / name).replace(BUILD / name)
        (BUILD / STAMP).write_text(json.dumps(wanted(machine), indent=1) + "\n")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def main() -> int:
    machine = arch()
    if is_current(machine):
        log(f"{BUILD} is up to date")
        return 0
    install(machine)
    log(f"vendored into {ZIP} and {BUILD / extension_name(machine)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
