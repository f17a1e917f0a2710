"""Small SQLite stores for the context (privileged-context ingestion) tests."""

from __future__ import annotations

import sqlite3
from pathlib import Path

VERIFIERS = ["math-answer", "python-tests", "sql-result"]


def make_store(path: Path, rows: list[tuple]) -> Path:
    """A small 'enterprise' table with its own column names."""
    con = sqlite3.connect(path)
    con.execute(
        "CREATE TABLE kb (ref TEXT, ask TEXT, gold TEXT, solution TEXT, origin TEXT, tool TEXT)"
    )
    con.executemany("INSERT INTO kb VALUES (?, ?, ?, ?, ?, ?)", rows)
    con.commit()
    con.close()
    return path


GOOD_ROWS = [
    (f"kb-{i}", f"What is {i} plus {i}?", str(2 * i), f"Add {i} and {i}: {i} + {i} = {2 * i}.",
     f"wiki/page/{i}", "math-answer")
    for i in range(1, 9)
]  # fmt: skip
