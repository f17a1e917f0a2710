"""The benchmark's thread count, set before torch is imported (OpenMP reads it once, then)."""

from __future__ import annotations

import os
import sys


def threads_from_argv(default: int = 2) -> int:
    """``--threads N`` / ``--threads=N`` from the command line, else ``default``."""
    for i, a in enumerate(sys.argv):
        if a == "--threads" and i + 1 < len(sys.argv):
            return int(sys.argv[i + 1])
        if a.startswith("--threads="):
            return int(a.split("=", 1)[1])
    return default


def pin_omp_threads(default: int = 2) -> None:
    """OMP_NUM_THREADS = the benchmark's thread count, unless the caller set it. Call before
    importing torch."""
    os.environ.setdefault("OMP_NUM_THREADS", str(threads_from_argv(default)))
