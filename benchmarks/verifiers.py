"""Verifier throughput: checks per second on batches of 256 items, sandboxed vs bare.

    .venv/bin/python benchmarks/verifiers.py --verifier verifiers/math-answer \
        --verifier verifiers/python-tests [--batches 3] [--batch-size 256] [--backends docker,local,bare]

For each verifier folder the items are its self-tests repeated to the batch size. Backends:

* ``docker``: :class:`~rlsd.verify.docker_sandbox.DockerSandbox`, one container per batch;
* ``local``: :class:`~rlsd.verify.local_sandbox.LocalSandbox` (bubblewrap, else unshare);
* ``bare``: the same program as a plain local subprocess (host ``/usr/bin/python3``, no sandbox, no
  limits), its ``/verifier`` paths pointed at a copy of the image layout: the bare-process limit.

Batches run one after another (``--concurrency 1``, the default) and only the batches are timed
(``--gap-s`` idles before each, as a trainer generating between verifications does: Docker's
pre-started container is then ready); ``--concurrency N`` times N batches at a time through the
sandbox pool. ``--prestart 0`` makes every Docker batch pay for creating and starting its
container. The image is built before timing starts.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rlsd.verify.local_sandbox import HOST_PATH, _pump, verifier_entries  # noqa: E402
from rlsd.verify.protocol import ITEM_TIMEOUT_ENV, NONCE_ENV, RunOutcome, encode_items  # noqa: E402
from rlsd.verify.sandbox import Sandbox  # noqa: E402
from rlsd.verify.spec import VerifierSpec, load_spec  # noqa: E402

PRESTART = [1]


class BareProcess(Sandbox):
    """The verifier program as a plain subprocess: no namespaces, no rlimits, no jail."""

    backend = "bare"

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self._dirs: list[str] = []

    def _prepare(self, spec: VerifierSpec, folder: Path) -> str:
        from rlsd.verify.images import run_prepare

        run_prepare(spec, folder)
        stage = tempfile.mkdtemp(prefix="rlsd-bare-")
        self._dirs.append(stage)
        for src, name in verifier_entries(folder):
            (shutil.copytree if os.path.isdir(src) else shutil.copy2)(
                src, os.path.join(stage, name)
            )
        return stage

    def _run_once(self, spec, folder, prepared, items, nonce) -> RunOutcome:
        argv = [
            a.replace("/verifier/", prepared + "/", 1) if a.startswith("/verifier/") else a
            for a in spec.command
        ]
        if argv[0] in ("python3", "python"):
            argv[0] = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
        env = {
            "PATH": HOST_PATH,
            "LANG": "C.UTF-8",
            NONCE_ENV: nonce,
            ITEM_TIMEOUT_ENV: f"{spec.limits.item_timeout_s:g}",
        }
        return _pump(argv, encode_items(items), spec, None, env=env)

    def close(self) -> None:
        for d in self._dirs:
            shutil.rmtree(d, ignore_errors=True)


def make(backend: str) -> Sandbox:
    if backend == "bare":
        return BareProcess(pool_size=2, retries=0)
    if backend == "docker":
        from rlsd.verify.docker_sandbox import DockerSandbox

        return DockerSandbox(pool_size=2, retries=0, prestart=PRESTART[0])
    from rlsd.verify.local_sandbox import LocalSandbox

    return LocalSandbox(pool_size=2, retries=0)


def items_for(spec: VerifierSpec, n: int) -> tuple[list[dict], list[bool]]:
    base = spec.self_test_items()
    expect = [t.expect == "pass" for t in spec.self_tests]
    items, want = [], []
    for i in range(n):
        items.append({**base[i % len(base)], "id": f"{i}"})
        want.append(expect[i % len(base)])
    return items, want


def bench(
    folder: Path, backend: str, batches: int, size: int, concurrency: int, gap_s: float = 0.0
) -> dict:
    spec = load_spec(folder)
    sb = make(backend)
    sb.pool_size = concurrency
    items, want = items_for(spec, size)
    sb.prepare(spec, folder)
    sb.run_batch(spec, folder, items[: min(8, size)])  # warm-up (page cache, image layers)
    if concurrency == 1:  # batch after batch, optionally with idle time between (not timed)
        results, wall = [], 0.0
        for _ in range(batches):
            if gap_s:
                time.sleep(gap_s)
            t0 = time.perf_counter()
            results.append(sb.run_batch(spec, folder, items))
            wall += time.perf_counter() - t0
    else:
        t0 = time.perf_counter()
        results = sb.run_many(spec, folder, [items] * batches)
        wall = time.perf_counter() - t0
    sb.close()
    if isinstance(sb, BareProcess):
        sb.close()
    agree = sum(r.passed == w for batch in results for r, w in zip(batch, want, strict=True))
    total = batches * size
    return {
        "verifier": spec.name,
        "backend": sb.backend,
        "items": total,
        "wall_s": wall,
        "checks_per_s": total / wall,
        "as_declared": agree / total,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--verifier",
        action="append",
        type=Path,
        required=True,
        help="a verifier folder (repeatable)",
    )
    ap.add_argument("--backends", default="docker,local,bare")
    ap.add_argument("--batches", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument(
        "--gap-s",
        type=float,
        default=0.0,
        help="idle seconds before each batch, not timed (a trainer generating between "
        "verifications; lets Docker's pre-started container get ready)",
    )
    ap.add_argument(
        "--prestart",
        type=int,
        default=1,
        help="Docker containers started ahead of the next batch (0: cold start)",
    )
    args = ap.parse_args()
    PRESTART[0] = args.prestart

    from _machine import describe
    from rich.console import Console
    from rich.table import Table

    console = Console(width=120)
    console.print(f"machine: {describe()}; load average {os.getloadavg()[0]:.1f}")
    rows = []
    for folder in args.verifier:
        for backend in args.backends.split(","):
            try:
                rows.append(
                    bench(
                        folder,
                        backend.strip(),
                        args.batches,
                        args.batch_size,
                        args.concurrency,
                        args.gap_s,
                    )
                )
            except Exception as exc:  # report and go on with the others
                console.print(f"[red]{folder.name} / {backend}: {type(exc).__name__}: {exc}[/]")
    table = Table(
        title=f"verifier throughput: {args.batches} batch(es) of {args.batch_size} "
        f"items, concurrency {args.concurrency}"
    )
    for col in ("verifier", "backend", "items", "wall s", "checks/s", "vs bare", "as declared"):
        table.add_column(col, justify="right" if col not in ("verifier", "backend") else "left")
    bare = {r["verifier"]: r["checks_per_s"] for r in rows if r["backend"] == "bare"}
    for r in rows:
        ref = bare.get(r["verifier"])
        table.add_row(
            r["verifier"],
            r["backend"],
            str(r["items"]),
            f"{r['wall_s']:.2f}",
            f"{r['checks_per_s']:.0f}",
            f"{r['checks_per_s'] / ref:.2f}" if ref else "—",
            f"{100 * r['as_declared']:.0f} %",
        )
    console.print(table)
    console.print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
