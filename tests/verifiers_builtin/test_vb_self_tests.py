"""Every built-in verifier's self-tests behave as declared, under the venv's and Debian's python3."""

from __future__ import annotations

import pytest
from vb_support import NAMES, python_ids, pythons, run_batch, self_test_items

CASES = [
    pytest.param(name, python, id=f"{name}-{pid}")
    for name in NAMES
    for python, pid in zip(pythons(name), python_ids(name), strict=True)
]


@pytest.mark.parametrize(("name", "python"), CASES)
def test_self_tests_behave_as_declared(name, python):
    items, expected = self_test_items(name)
    results = run_batch(name, items, python=python)
    wrong = [
        (item["id"], r["passed"], r["detail"])
        for item, r, want in zip(items, results, expected, strict=True)
        if r["passed"] is not want
    ]
    assert not wrong
    for r in results:
        assert r["detail"].strip()
        assert r["score"] == (1.0 if r["passed"] else 0.0)
