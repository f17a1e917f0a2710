from __future__ import annotations

from pathlib import Path

import pytest

from rlsd.context.ingest import IngestResult, ingest
from rlsd.demo import build_demo_store, demo_sources


@pytest.fixture(scope="session")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("demo") / "demo.sqlite"
    return path, build_demo_store(path)


@pytest.fixture(scope="session")
def demo_snapshot(
    demo_store: tuple[Path, dict], tmp_path_factory: pytest.TempPathFactory
) -> IngestResult:
    """The demo store ingested under the repository's data policy (the store given to the
    sources as a variable: nothing is set in the environment)."""
    path, _ = demo_store
    demo = demo_sources(path, build=False)
    return ingest(
        demo.path, variables=demo.variables, out_root=tmp_path_factory.mktemp("snapshots")
    )
