"""Verifier throughput: checks per second on batches of 256 items, sandboxed vs bare.

    .venv/bin/python benchmarks/verifiers.py [--verifier verifiers/math-answer ...] [--batches 3]
        [--batch-size 256] [--backends docker,local,bare] [--modes warm,cold] [--load 2]

For each verifier folder the items are its self-tests repeated to the batch size. Backends:

* ``docker``: :class:`~rlsd.verify.docker_sandbox.DockerSandbox`, one container per batch;
* ``local``: :class:`~rlsd.verify.local_sandbox.LocalSandbox` (bubblewrap over the image's
  root filesystem);
* ``bare``: the same program as a plain local subprocess (host ``/usr/bin/python3``, no sandbox, no
  limits), its ``/verifier`` paths pointed at a copy of the image layout: the bare-process limit.

Two modes, each printed as a table (``--modes``): **warm**, the trainer's pattern: every backend
(the bare process too) starts the program for the next batch ahead of it, and 1 s of idle time
(not timed) comes before each batch, as generation does between verifications; **cold**: batch
after batch, each paying for starting its own process, jail or container. Batches run one after
another (``--concurrency 1``, the default) and only the batches are timed; ``--concurrency N``
times N batches at a time through the sandbox pool; ``--load N`` keeps N busy processes running
while timing (a machine that trains). The image is built before timing starts.
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

from rlsd.verify.local_sandbox import HOST_PATH, Launched, image_layout  # noqa: E402
from rlsd.verify.protocol import ITEM_TIMEOUT_ENV, NONCE_ENV, RunOutcome, new_nonce  # noqa: E402
from rlsd.verify.sandbox import Sandbox  # noqa: E402
from rlsd.verify.spec import VerifierSpec, load_spec  # noqa: E402
from rlsd.verify.warm_pool import WarmPool  # noqa: E402

PRESTART = [1]  # set per mode by main()


class BareProcess(Sandbox):
    """The verifier program as a plain subprocess: no namespaces, no rlimits, no jail (as root,
    a per-item-uid verifier still hands its candidates uids of their own). Pre-started like
    the sandboxes, so the comparison is process against process."""

    backend = "bare"

    def __init__(self, prestart: int = 1, **kw: Any) -> None:
        super().__init__(**kw)
        self._dirs: list[str] = []
        self._pool: WarmPool[Launched] = WarmPool(self._launch, Launched.kill, size=prestart)

    def _prepare(self, spec: VerifierSpec, folder: Path) -> str:
        from rlsd.verify.images import run_prepare

        run_prepare(spec, folder)
        stage = tempfile.mkdtemp(prefix="rlsd-bare-")
        os.chmod(stage, 0o755)  # the program may drop to uid 65534
        self._dirs.append(stage)
        for src, dest in image_layout(spec, folder).files:
            target = os.path.join(stage, dest.removeprefix("/verifier/"))
            os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
            shutil.copy2(src, target)
        return stage

    def _launch(self, spec: VerifierSpec, stage: str) -> Launched:
        argv = [
            a.replace("/verifier/", stage + "/", 1) if a.startswith("/verifier/") else a
            for a in spec.command
        ]
        if argv[0] in ("python3", "python"):
            argv[0] = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
        nonce = new_nonce()
        env = {
            "PATH": HOST_PATH,
            "LANG": "C.UTF-8",
            NONCE_ENV: nonce,
            ITEM_TIMEOUT_ENV: f"{spec.limits.item_timeout_s:g}",
        }
        return Launched(argv, None, nonce, env)

    def _run_once(self, spec, folder, prepared, data, ids, nonce) -> RunOutcome:
        launched = self._pool.take((spec.name, prepared), spec, prepared)
        return launched.collect(data, spec, ids, stop_when_complete=False)

    def close(self) -> None:
        self._pool.close()
        for d in self._dirs:
            shutil.rmtree(d, ignore_errors=True)


def make(backend: str) -> Sandbox:
    if backend == "bare":
        return BareProcess(pool_size=2, retries=0, prestart=PRESTART[0])
    if backend == "docker":
        from rlsd.verify.docker_sandbox import DockerSandbox

        return DockerSandbox(pool_size=2, retries=0, prestart=PRESTART[0])
    from rlsd.verify.local_sandbox import LocalSandbox

    return LocalSandbox(pool_size=2, retries=0, prestart=PRESTART[0])


BUILTINS = ["math-answer", "python-tests", "sql-result", "json-schema", "policy-rules"]
MODES = {
    # the trainer's pattern: it generates between verifications, so the next sandbox is started
    # (not timed) before its batch arrives
    "warm": {"prestart": 1, "gap_s": 1.0},
    # batch after batch, each one starting its own process, jail or container (timed)
    "cold": {"prestart": 0, "gap_s": 0.0},
}


def items_for(spec: VerifierSpec, n: int) -> tuple[list[dict], list[bool]]:
    base = spec.self_test_items()
    expect = [t.expect == "pass" for t in spec.self_tests]
    items, want = [], []
    for i in range(n):
        items.append({**base[i % len(base)], "id": f"{i}"})
        want.append(expect[i % len(base)])
    return items, want


class CpuLoad:
    """``n`` busy processes while it is open: the 'loaded cores' of a machine that trains."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.procs: list = []

    def __enter__(self) -> CpuLoad:
        import subprocess

        for _ in range(self.n):
            self.procs.append(subprocess.Popen([sys.executable, "-c", "while True: pass"]))
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()


def bench(
    folder: Path,
    backend: str,
    batches: int,
    size: int,
    concurrency: int,
    gap_s: float = 0.0,
    load: int = 0,
) -> dict:
    spec = load_spec(folder)
    sb = make(backend)
    sb.pool_size = concurrency
    items, want = items_for(spec, size)
    sb.prepare(spec, folder)
    sb.run_batch(spec, folder, items[: min(8, size)])  # warm-up (page cache, image layers)
    with CpuLoad(load):
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
        help="a verifier folder (repeatable; default: the five built-ins)",
    )
    ap.add_argument("--backends", default="docker,local,bare")
    ap.add_argument("--modes", default="warm,cold", help="warm, cold or both (see MODES)")
    ap.add_argument("--batches", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument(
        "--load",
        type=int,
        default=0,
        help="busy processes running while the batches are timed (a machine that also trains)",
    )
    args = ap.parse_args()
    folders = args.verifier or [
        Path(__file__).resolve().parents[1] / "verifiers" / n for n in BUILTINS
    ]

    from _machine import describe
    from rich.console import Console
    from rich.table import Table

    console = Console(width=120)
    console.print(f"machine: {describe()}; load average {os.getloadavg()[0]:.1f}")
    for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
        settings = MODES[mode]
        PRESTART[0] = settings["prestart"]
        rows = []
        for folder in folders:
            for backend in args.backends.split(","):
                try:
                    rows.append(
                        bench(
                            folder,
                            backend.strip(),
                            args.batches,
                            args.batch_size,
                            args.concurrency,
                            settings["gap_s"],
                            args.load,
                        )
                    )
                except Exception as exc:  # report and go on with the others
                    console.print(f"[red]{folder.name} / {backend}: {type(exc).__name__}: {exc}[/]")
        how = (
            "sandbox started ahead, 1 s idle before each batch (not timed)"
            if mode == "warm"
            else "each batch starts its own sandbox, back to back"
        )
        table = Table(
            title=f"{mode}: {args.batches} batch(es) of {args.batch_size} items, concurrency "
            f"{args.concurrency}, {args.load} busy process(es); {how}"
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
