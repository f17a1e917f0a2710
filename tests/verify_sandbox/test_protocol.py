"""The batch protocol: nonce, first result wins, ignored lines, missing results, retries."""

from __future__ import annotations

import json

import pytest

from rlsd.verify.protocol import RunOutcome, normalise_items, parse_output
from rlsd.verify.sandbox import Sandbox
from rlsd.verify.spec import load_spec

N = "n" * 32


def line(**kw) -> bytes:
    return json.dumps(kw).encode()


def test_parse_output_acceptance_rule():
    out = b"\n".join(
        [
            b"hello from the program",
            line(id="a", passed=True, score=1.0, detail="no nonce"),
            line(id="a", passed=True, score=1.0, detail="wrong", nonce="x" * 32),
            line(id="a", passed=False, score=0.0, detail="first", nonce=N),
            line(id="a", passed=True, score=1.0, detail="second", nonce=N),
            line(id="zz", passed=True, score=1.0, detail="unknown id", nonce=N),
            line(id="b", passed="yes", score=1.0, nonce=N),
            line(id="b", passed=True, score=1.0, detail="after a malformed one", nonce=N),
            line(id="c", passed=True, score=1.5, nonce=N),
            b'{"id": "d", "passed": tr',
            b"[1, 2, 3]",
            line(id="e", passed=True, nonce=N),
        ]
    )
    p = parse_output(out, N, {"a", "b", "c", "d", "e"})
    assert p.accepted["a"].detail == "first" and not p.accepted["a"].passed
    assert "'passed' must be true or false" in p.malformed["b"]
    assert "outside [0, 1]" in p.malformed["c"]
    assert "d" not in p.accepted and "d" not in p.malformed
    assert p.accepted["e"].score == 1.0  # score defaults from passed
    assert p.ignored_lines == 6 and p.duplicate_lines == 2


def test_items_get_ids_and_duplicates_are_rejected():
    assert [i["id"] for i in normalise_items([{"response": "x"}, {"id": 7, "response": "y"}])] == [
        "0",
        "7",
    ]
    with pytest.raises(ValueError, match="duplicate item id '1'"):
        normalise_items([{"id": "1"}, {"id": 1}])


class ScriptedRuns(Sandbox):
    """A sandbox without processes: each run answers from a script (for the retry logic)."""

    backend = "fake"

    def __init__(self, runs, **kw):
        super().__init__(**kw)
        self.runs = list(runs)
        self.seen = []

    def _run_once(self, spec, folder, prepared, items, nonce):
        self.seen.append([i["id"] for i in items])
        answer, outcome = self.runs.pop(0)
        outcome.stdout = b"\n".join(
            line(id=i, passed=ok, score=float(ok), detail="real", nonce=nonce)
            for i, ok in answer.items()
        )
        return outcome


@pytest.fixture
def spec(tmp_path):
    from tests.verify_sandbox import folders

    folder = folders.echo_eq(tmp_path)
    return load_spec(folder), folder


def test_crash_mid_batch_blames_one_item_and_reruns_the_rest(spec):
    sb = ScriptedRuns(
        [
            ({"a": True}, RunOutcome(exit_code=-9)),  # died on b
            ({"c": False}, RunOutcome(exit_code=0)),
        ]
    )
    res = sb.run_batch(*spec, [{"id": x, "response": ""} for x in "abc"])
    assert sb.seen == [["a", "b", "c"], ["c"]]
    assert [(r.id, r.passed, r.detail) for r in res] == [
        ("a", True, "real"),
        ("b", False, "error: no result (verifier killed by signal 9)"),
        ("c", False, "real"),
    ]


def test_retries_are_bounded_and_timeouts_named(spec):
    timeout = RunOutcome(exit_code=137, timed_out=True)
    sb = ScriptedRuns([({}, timeout), ({}, timeout), ({}, timeout)], retries=2)
    res = sb.run_batch(*spec, [{"id": x, "response": ""} for x in "abcd"])
    assert sb.seen == [["a", "b", "c", "d"], ["b", "c", "d"], ["c", "d"]]
    assert all(r.detail == "timeout: batch exceeded 300 s" and not r.passed for r in res)


def test_clean_exit_with_missing_results_is_not_retried(spec):
    sb = ScriptedRuns([({"a": True}, RunOutcome(exit_code=0, stderr_tail=b"oops\n"))])
    res = sb.run_batch(*spec, [{"id": "a", "response": ""}, {"id": "b", "response": ""}])
    assert res[1].detail == "error: no result (verifier exited normally: oops)"
    assert len(sb.seen) == 1


def _scripted(sandbox, verifier_root, items):
    folder = verifier_root / "scripted"
    return sandbox.run_batch(load_spec(folder), folder, items)


RESULT = '{"id": "{id}", "passed": %s, "score": %s, "detail": "%s", "nonce": "{nonce}"}'


def test_protocol_in_the_sandbox(sandbox, verifier_root, monkeypatch):
    monkeypatch.setenv("RLSD_TEST_SECRET", "hunter2")
    items = [
        {"id": "first-wins", "emit": [RESULT % ("true", 1, "first"), RESULT % ("false", 0, "2nd")]},
        {"id": "no-nonce", "emit": ['{"id": "{id}", "passed": true, "score": 1}']},
        {
            "id": "spoof-other",
            "emit": [
                RESULT.replace("{id}", "missing").replace("{nonce}", "0" * 32)
                % ("true", 1, "spoof"),
                "not json at all",
                RESULT % ("false", 0, "real"),
            ],
        },
        {"id": "malformed", "emit": [RESULT % ('"yes"', 1, "bad")]},
        {"id": "env", "emit": [RESULT % ("true", 1, "{env}")]},
        {"id": "missing", "emit": []},
    ]
    res = {r.id: r for r in _scripted(sandbox, verifier_root, items)}
    assert res["first-wins"].passed and res["first-wins"].detail.startswith("first")
    assert "ignored 4 other stdout line(s)" in res["first-wins"].detail
    assert not res["no-nonce"].passed and "no result" in res["no-nonce"].detail
    assert not res["missing"].passed  # the spoofed line (printed under another id) did not count
    assert res["missing"].detail.startswith("error: no result (verifier exited normally")
    assert res["malformed"].detail.startswith("error: malformed output: 'passed'")
    env = set(json.loads(res["env"].detail.split(" [")[0].replace("'", '"')))
    assert "RLSD_TEST_SECRET" not in env
    assert {"RLSD_RESULT_NONCE", "RLSD_ITEM_TIMEOUT_S"} <= env
    allowed = {
        "RLSD_RESULT_NONCE",
        "RLSD_ITEM_TIMEOUT_S",
        "PATH",
        "LANG",
        "HOME",
        "HOSTNAME",
        "PYTHONDONTWRITEBYTECODE",
        "LC_CTYPE",
        "PWD",
    }
    assert env <= allowed, env - allowed
    assert {r.backend for r in res.values()} == {sandbox.backend}


def test_verifier_exit_code_is_reported(sandbox, verifier_root):
    items = [{"id": "x", "emit": [], "exit": 3}, {"id": "y"}]
    res = _scripted(sandbox, verifier_root, items)
    assert res[0].detail.startswith("error: no result (verifier exited with code 3")
    assert res[1].detail.startswith("error: no result (verifier exited normally")  # rerun


def test_every_batch_gets_a_fresh_nonce(sandbox, verifier_root):
    item = {"id": "n", "emit": [RESULT % ("true", 1, "{nonce}")]}
    first = _scripted(sandbox, verifier_root, [item])[0]
    second = _scripted(sandbox, verifier_root, [item])[0]  # Docker: a pre-started container
    assert first.passed and second.passed
    assert len(first.detail) == 32 and first.detail != second.detail
