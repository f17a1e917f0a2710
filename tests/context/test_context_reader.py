from __future__ import annotations

from pathlib import Path

import pytest

from rlsd.context import SourceConfig, read_source, rows_to_tasks
from tests.helpers.context_store import GOOD_ROWS, make_store


def _cfg(url: str, **kw) -> SourceConfig:
    return SourceConfig.model_validate(
        {
            "name": "kb",
            "url": url,
            "table": "kb",
            "columns": {
                "id": "ref",
                "prompt": "ask",
                "answer": "gold",
                "privileged_context": "solution",
                "source": "origin",
                "verifier": "tool",
            },
            "metadata_columns": ["origin"],
            "domain": "arithmetic",
            "prompt_template": "Solve: {prompt}",
            "system_prompt": "Be brief.",
            **kw,
        }
    )


def test_rows_map_to_task_records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_store(tmp_path / "kb.sqlite", GOOD_ROWS)
    monkeypatch.setenv("KB_DIR", str(tmp_path))
    cfg = _cfg("sqlite:///${KB_DIR}/kb.sqlite")
    rows = read_source(cfg)
    assert len(rows) == len(GOOD_ROWS)
    assert rows[0]["id"] == "kb-1" and rows[0]["split"] == "train"
    tasks, quarantined = rows_to_tasks(cfg, rows)
    assert quarantined == []
    t = tasks[2]
    assert t.id == "kb-3" and t.answer == "6" and t.verifier == "math-answer"
    assert t.messages() == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Solve: What is 3 plus 3?"},
    ]
    assert t.privileged_context == "Add 3 and 3: 3 + 3 = 6."
    assert t.source == "context:kb wiki/page/3"
    assert t.metadata == {"domain": "arithmetic", "context_source": "kb", "origin": "wiki/page/3"}


def test_query_source_and_missing_column(tmp_path: Path) -> None:
    make_store(tmp_path / "kb.sqlite", GOOD_ROWS)
    url = f"sqlite:///{tmp_path}/kb.sqlite"
    cfg = _cfg(url, table=None, query="SELECT * FROM kb WHERE CAST(gold AS INTEGER) > 10")
    assert [r["id"] for r in read_source(cfg)] == ["kb-6", "kb-7", "kb-8"]
    bad = _cfg(url, table=None, query="SELECT ref, ask FROM kb")
    with pytest.raises(KeyError, match="returns no column"):
        read_source(bad)


def test_leaking_row_is_quarantined_with_reason(tmp_path: Path) -> None:
    leak = ("kb-leak", "What is 2+2? Hint: Add 2 and 2 to get 4.", "4", "Add 2 and 2 to get 4.",
            "wiki/leak", "math-answer")  # fmt: skip
    make_store(tmp_path / "kb.sqlite", [*GOOD_ROWS, leak])
    cfg = _cfg(f"sqlite:///{tmp_path}/kb.sqlite")
    tasks, quarantined = rows_to_tasks(cfg, read_source(cfg))
    assert len(tasks) == len(GOOD_ROWS)
    (q,) = quarantined
    assert q["id"] == "kb-leak" and q["row_index"] == len(GOOD_ROWS)
    assert "contains the privileged context" in q["reasons"][0]
    assert q["privileged_sha256"].startswith("sha256:") and "privileged_context" not in q
