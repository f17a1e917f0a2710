"""Great Expectations suites, quarantine and the policy threshold over a planted bad source."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlsd.context import IngestionPolicyError, SourceConfig, read_source, validate_source
from tests.helpers.context_store import GOOD_ROWS, VERIFIERS, make_store

BAD_ROWS = [
    ("kb-null", "What is 1 plus 1?", None, "Add 1 and 1: 1 + 1 = 2.", "wiki/n", "math-answer"),
    ("kb-1", "Duplicate id: what is 1 plus 1?", "2", "Add 1 and 1 to get 2.", "wiki/d", "math-answer"),
    ("kb-fmt", "What is 5 plus 5?", "ten", "Add 5 and 5: 5 + 5 = 10.", "wiki/f", "math-answer"),
    ("kb-tool", "What is 6 plus 6?", "12", "Add 6 and 6: 6 + 6 = 12.", "wiki/t", "no-such-verifier"),
    ("kb-leak", "What is 2+2? Hint: add 2 and 2 to get 4.", "4", "Add 2 and 2 to get 4.", "wiki/l", "math-answer"),
]  # fmt: skip


def _cfg(url: str, max_bad: float) -> SourceConfig:
    return SourceConfig.model_validate(
        {
            "name": "kb-planted",
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
            "domain": "arithmetic",
            "expectations": {"answer_regex": "^-?[0-9]+$", "answer_length": [1, 8]},
            "policy": {"max_bad_fraction": max_bad},
        }
    )


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = make_store(tmp_path_factory.mktemp("kb") / "kb.sqlite", [*GOOD_ROWS, *BAD_ROWS])
    return f"sqlite:///{path}"


def test_bad_rows_are_quarantined_with_the_expectation_that_caught_them(
    planted: str, tmp_path: Path
) -> None:
    cfg = _cfg(planted, max_bad=0.5)
    out = validate_source(cfg, VERIFIERS, out_dir=tmp_path)
    reasons = {}
    for q in out.quarantined:
        reasons.setdefault(q["id"], []).extend(q["reasons"])
    assert reasons["kb-null"] == ["expect_column_values_to_not_be_null(answer)"]
    # both rows with the duplicated id are held back: which one is right is for a human to say
    assert reasons["kb-1"] == ["expect_column_values_to_be_unique(id)"] * 2
    assert reasons["kb-fmt"] == ["expect_column_values_to_match_regex(answer)"]
    assert reasons["kb-tool"] == ["expect_column_values_to_be_in_set(verifier)"]
    # the leak guard runs inside the GE suite, as a derived column
    assert reasons["kb-leak"] == [
        "expect_column_values_to_be_in_set(student_prompt_contains_privileged)"
    ]
    assert sorted(t.id for t in out.tasks) == sorted(r[0] for r in GOOD_ROWS if r[0] != "kb-1")
    assert out.n_rows == 13 and len(out.quarantined) == 6

    # the quarantine file: one line per bad row, privileged text only as a digest
    lines = (tmp_path / "kb-planted.quarantine.jsonl").read_text().splitlines()
    assert len(lines) == 6
    for line in lines:
        q = json.loads(line)
        assert q["source"] == "kb-planted" and q["reasons"]
        assert q["privileged_sha256"].startswith("sha256:")
    assert "Add 5 and 5" not in "".join(lines)

    # the validation document: GE results, failing ids, no unexpected values
    doc = json.loads((tmp_path / "kb-planted.validation.json").read_text())
    assert doc["success"] is False and doc["source"] == "kb-planted"
    by_type = {
        (r["expectation_config"]["type"], r["expectation_config"]["kwargs"].get("column")): r
        for r in doc["results"]
    }
    regex = by_type[("expect_column_values_to_match_regex", "answer")]
    assert regex["success"] is False and regex["result"]["unexpected_ids"] == ["kb-fmt"]
    assert "unexpected_list" not in regex["result"]
    assert by_type[("expect_column_value_lengths_to_be_between", "prompt")]["success"] is True
    assert doc["rlsd"]["n_quarantined"] == 6 and doc["rlsd"]["n_tasks"] == 7


def test_policy_threshold_stops_ingestion_naming_source_and_expectations(
    planted: str, tmp_path: Path
) -> None:
    cfg = _cfg(planted, max_bad=0.1)
    with pytest.raises(IngestionPolicyError) as exc:
        validate_source(cfg, VERIFIERS, out_dir=tmp_path)
    msg = str(exc.value)
    assert "'kb-planted'" in msg and "6/13 rows" in msg and "max_bad_fraction=10.0%" in msg
    for label in (
        "expect_column_values_to_not_be_null(answer)",
        "expect_column_values_to_be_unique(id)",
        "expect_column_values_to_match_regex(answer)",
        "expect_column_values_to_be_in_set(verifier)",
        "expect_column_values_to_be_in_set(student_prompt_contains_privileged)",
    ):
        assert label in msg
    # the evidence is written before ingestion stops
    assert len((tmp_path / "kb-planted.quarantine.jsonl").read_text().splitlines()) == 6


def test_clean_source_passes_at_zero_tolerance(tmp_path: Path) -> None:
    path = make_store(tmp_path / "clean.sqlite", GOOD_ROWS)
    cfg = _cfg(f"sqlite:///{path}", max_bad=0.0)
    out = validate_source(cfg, VERIFIERS, rows=read_source(cfg))
    assert out.quarantined == [] and len(out.tasks) == len(GOOD_ROWS)
    assert out.results["success"] is True
    assert out.results["statistics"]["unsuccessful_expectations"] == 0
