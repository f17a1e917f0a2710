"""Runs the rlsd CLI with the toy verifier registered (for subprocess and accelerate tests)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.helpers.toy_verifier import register  # noqa: E402

register()

from rlsd.cli import app  # noqa: E402

app()
