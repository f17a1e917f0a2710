from __future__ import annotations

from pathlib import Path

import pytest

from rlsd.context import build_demo_store


@pytest.fixture(scope="session")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("demo") / "demo.sqlite"
    return path, build_demo_store(path)
