"""python-tests run directly (Debian's python3, as root: the program hands its candidates uids of
their own, then drops to uid 65534): verdicts and details of ordinary items, and the program's
pieces. HumanEval, the hostile candidates and the red-team battery run through the real sandboxes
in ``tests/verify_sandbox/test_python_tests.py``."""

from __future__ import annotations

import pytest
from vb_support import load_module, pythons, run_batch

NAME = "python-tests"
pytestmark = pytest.mark.skipif(
    not pythons(NAME), reason="python-tests starts as root and needs Debian's /usr/bin/python3"
)


TEST = "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"
REF = {"test": TEST, "entry_point": "add"}
GOOD = "def add(a, b):\n    return a + b\n"


def _item(ident, response, reference=REF):
    return {"id": ident, "response": response, "reference": reference}


@pytest.mark.parametrize(
    ("ident", "response", "reference", "passes", "detail"),
    [
        (
            "fenced-completion",
            "```python\n    return a + b\n```",
            {**REF, "prompt": "def add(a, b):\n"},
            True,
            "passed",
        ),
        (
            "full-with-prompt",
            GOOD,
            {**REF, "prompt": "import math\n\ndef add(a, b):\n    '''Add.'''\n"},
            True,
            "passed",
        ),
        (
            "uses-prompt-import",
            "def add(a, b):\n    return int(math.fsum([a, b]))\n",
            {**REF, "prompt": "import math\n\ndef add(a, b):\n    '''Add.'''\n"},
            True,
            "passed",
        ),
        ("fields-on-item", GOOD, None, True, "passed"),
        ("no-test", GOOD, {"entry_point": "add"}, False, "error: the item has no test code"),
        (
            "missing-entry",
            "def plus(a, b):\n    return a + b\n",
            REF,
            False,
            "error: the candidate does not define 'add'",
        ),
        (
            "bad-entry-name",
            GOOD,
            {**REF, "entry_point": "add; import os"},
            False,
            "error: entry_point",
        ),
        ("syntax", "def add(a, b) return a + b\n", REF, False, "error: SyntaxError"),
        ("raises", "def add(a, b):\n    return a + None\n", REF, False, "failed: TypeError"),
        (
            "assert-line",
            "def add(a, b):\n    return a - b\n",
            REF,
            False,
            "failed: AssertionError (test line 2: assert candidate(2, 3) == 5)",
        ),
        (
            "broken-test",
            GOOD,
            {"test": "def check(candidate):\n  assert x ==\n", "entry_point": "add"},
            False,
            "error: the test code does not compile",
        ),
        ("empty", "   ", REF, False, "error: empty response"),
    ],
)
def test_cases(ident, response, reference, passes, detail):
    item = _item(ident, response, reference)
    if reference is None:
        item = {"id": ident, "response": response, "test": TEST, "entry_point": "add"}
    [r] = run_batch(NAME, [item])
    assert r["passed"] is passes and r["detail"].startswith(detail), r["detail"]


def test_build_program_strips_fences_and_completes_prompts():
    m = load_module(NAME)
    prompt = "def f(x):\n    '''Doc.'''\n"
    assert m.build_program("    return x\n", prompt, "f") == prompt + "    return x\n"
    full = "def f(x):\n    return x\n"
    assert m.build_program(f"Sure:\n```python\n{full}```\nbye", prompt, "f").endswith(full)
    two = "```python\nimport os\n```\n```python\ndef f(x):\n    return 1\n```"
    assert m.build_program(two, None, "f") == "def f(x):\n    return 1\n"
    assert m.build_program(full, None, "f") == full
