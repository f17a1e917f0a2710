from __future__ import annotations

from pathlib import Path

import pytest

from rlsd.context import DEMO_SOURCES, build_demo_store
from rlsd.context.ingest import IngestResult, ingest


@pytest.fixture(scope="session")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("demo") / "demo.sqlite"
    return path, build_demo_store(path)


@pytest.fixture(scope="session")
def demo_snapshot(
    demo_store: tuple[Path, dict], tmp_path_factory: pytest.TempPathFactory
) -> IngestResult:
    """The demo store ingested under the repository's data policy."""
    path, _ = demo_store
    mp = pytest.MonkeyPatch()
    mp.setenv("RLSD_DEMO_STORE", str(path))
    try:
        return ingest(DEMO_SOURCES, out_root=tmp_path_factory.mktemp("snapshots"))
    finally:
        mp.undo()
