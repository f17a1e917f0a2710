"""Freed large blocks stay in the heap for reuse once ``keep_freed_memory`` ran (glibc only)."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import sys
import torch
from rlsd.runtime import keep_freed_memory

def rss_mb():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096 / 2**20

if sys.argv[1] == "keep":
    assert keep_freed_memory() and keep_freed_memory()  # idempotent
x = torch.ones(50_000_000)  # 200 MB, touched
peak = rss_mb()
del x
print(round(peak - rss_mb()))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc only")
def test_freed_blocks_are_kept_only_when_asked():
    def returned_mb(mode: str) -> int:
        out = subprocess.run(
            [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True
        )
        return int(out.stdout.strip())

    assert returned_mb("default") > 150  # glibc unmaps a freed 200 MB block at once
    assert returned_mb("keep") < 20  # kept for the next step's tensors
