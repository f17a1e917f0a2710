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
    """A sandbox without processes: each run answers from a script (for the retry logic).

    A script entry is ``(answers, outcome)``: ``answers`` maps item ids to True/False (a result
    line, after its start marker when ``markers``) or None (a start marker only: the item the
    program was checking when the run ended)."""

    backend = "fake"

    def __init__(self, runs, markers=True, **kw):
        super().__init__(**kw)
        self.runs = list(runs)
        self.markers = markers
        self.seen = []

    def _run_once(self, spec, folder, prepared, data, ids, nonce):
        self.seen.append(list(ids))
        answer, outcome = self.runs.pop(0)
        lines = []
        for i, ok in answer.items():
            if self.markers:
                lines.append(line(start=i, nonce=nonce))
            if ok is not None:
                lines.append(line(id=i, passed=ok, score=float(ok), detail="real", nonce=nonce))
        outcome.stdout = b"\n".join(lines)
        outcome.nonce = nonce
        return outcome


@pytest.fixture
def spec(tmp_path):
    from tests.verify_sandbox import folders

    folder = folders.echo_eq(tmp_path)
    return load_spec(folder), folder


def items(ids):
    return [{"id": x, "response": ""} for x in ids]


def test_a_crash_charges_only_the_item_in_progress(spec):
    killed = RunOutcome(exit_code=-9)
    sb = ScriptedRuns(
        [
            ({"a": True, "b": None}, killed),  # died while checking b
            ({"c": False}, RunOutcome(exit_code=0)),  # c runs again, uncharged
            ({"b": None}, RunOutcome(exit_code=-9)),  # b alone: kills it again
        ]
    )
    res = sb.run_batch(*spec, items("abc"))
    assert sb.seen == [["a", "b", "c"], ["c"], ["b"]]
    assert [(r.id, r.passed, r.accepted) for r in res] == [
        ("a", True, True),
        ("b", False, False),
        ("c", False, True),
    ]
    assert res[1].detail == "error: no result (verifier killed by signal 9) (2 runs)"


def test_an_item_that_crashed_once_by_chance_gets_its_verdict_alone(spec):
    sb = ScriptedRuns(
        [
            ({"a": None}, RunOutcome(exit_code=137)),
            ({"b": True}, RunOutcome(exit_code=0)),
            ({"a": True}, RunOutcome(exit_code=0)),
        ]
    )
    res = sb.run_batch(*spec, items("ab"))
    assert [(r.id, r.passed, r.accepted) for r in res] == [("a", True, True), ("b", True, True)]


def test_without_start_markers_the_first_item_without_a_result_is_charged(spec):
    sb = ScriptedRuns(
        [
            ({"a": True}, RunOutcome(exit_code=-9)),  # died on b
            ({"c": False}, RunOutcome(exit_code=0)),
            ({}, RunOutcome(exit_code=-9)),  # b alone
        ],
        markers=False,
    )
    res = sb.run_batch(*spec, items("abc"))
    assert sb.seen == [["a", "b", "c"], ["c"], ["b"]]
    assert [(r.id, r.passed) for r in res] == [("a", True), ("b", False), ("c", False)]
    assert res[1].detail.startswith("error: no result (verifier killed by signal 9)")


def test_many_killers_cannot_fail_the_honest_items(spec):
    """Every other item kills the verifier: each killer is charged, every honest item gets its
    own verdict (the old shared retry budget failed all items after the second kill)."""
    ids = [f"{kind}{n}" for n in range(6) for kind in ("k", "h")]

    class Killers(ScriptedRuns):
        def _run_once(self, spec, folder, prepared, data, ids, nonce):
            answers = {}
            for i in ids:
                if i.startswith("k"):
                    answers[i] = None
                    break
                answers[i] = True
            self.runs = [(answers, RunOutcome(exit_code=-9 if None in answers.values() else 0))]
            return super()._run_once(spec, folder, prepared, data, ids, nonce)

    res = Killers([]).run_batch(*spec, items(ids))
    assert all(r.passed for r in res if r.id.startswith("h"))
    assert all(not r.passed and not r.accepted for r in res if r.id.startswith("k"))


def test_a_stalled_item_fails_at_once_and_the_rest_run_again(spec):
    sb = ScriptedRuns(
        [
            ({"a": True, "b": None}, RunOutcome(exit_code=-9, stalled=True)),
            ({"c": True}, RunOutcome(exit_code=0)),
        ]
    )
    res = sb.run_batch(*spec, items("abc"))
    assert sb.seen == [["a", "b", "c"], ["c"]]
    deadline = spec[0].limits.result_deadline_s()
    assert res[1].detail == f"timeout: no result within {deadline:g} s (verifier stopped)"
    assert res[2].passed


def test_a_program_that_dies_before_any_item_fails_the_batch_after_two_runs(spec):
    dead = RunOutcome(exit_code=2, stderr_tail=b"cannot start\n")
    sb = ScriptedRuns([({}, dead), ({}, dead)], markers=False)
    res = sb.run_batch(*spec, items("abcd"))
    assert len(sb.seen) == 2
    assert all(not r.passed and "cannot start" in r.detail for r in res)


def test_a_death_between_items_reruns_the_rest_uncharged(spec):
    between = RunOutcome(exit_code=3)
    sb = ScriptedRuns(
        [
            ({"a": True}, between),  # stopped after a (e.g. could not clean up)
            ({"b": True}, between),
            ({"c": True}, between),
            ({"d": True}, RunOutcome(exit_code=0)),
        ]
    )
    res = sb.run_batch(*spec, items("abcd"))
    assert [r.passed for r in res] == [True] * 4
    assert sb.seen == [["a", "b", "c", "d"], ["b", "c", "d"], ["c", "d"], ["d"]]


def test_output_cap_and_batch_timeout_charge_the_item_in_progress(spec):
    sb = ScriptedRuns(
        [
            ({"a": None}, RunOutcome(exit_code=137, output_capped=True)),
            ({"b": None}, RunOutcome(exit_code=137, timed_out=True)),
            ({"c": True}, RunOutcome(exit_code=0)),
        ]
    )
    res = sb.run_batch(*spec, items("abc"))
    assert sb.seen == [["a", "b", "c"], ["b", "c"], ["c"]]
    assert res[0].detail.startswith("error: output exceeded")
    assert res[1].detail == "timeout: batch exceeded 300 s"
    assert res[2].passed


def test_clean_exit_with_missing_results_is_not_retried(spec):
    sb = ScriptedRuns([({"a": True}, RunOutcome(exit_code=0, stderr_tail=b"oops\n"))])
    res = sb.run_batch(*spec, items("ab"))
    assert res[1].detail == "error: no result (verifier exited normally: oops)"
    assert len(sb.seen) == 1


def test_an_item_that_cannot_be_encoded_fails_alone(spec):
    sb = ScriptedRuns([({"a": True, "c": True}, RunOutcome(exit_code=0))])
    batch = [
        {"id": "a", "response": "lone surrogate \ud800 and \x00 and \U0001f600"},
        {"id": "b", "response": float("nan")},
        {"id": "c", "response": "fine"},
    ]
    res = sb.run_batch(*spec, batch)
    assert sb.seen == [["a", "c"]]
    assert res[0].passed and res[2].passed
    assert res[1].detail.startswith("error: malformed item: cannot be encoded (ValueError")


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
