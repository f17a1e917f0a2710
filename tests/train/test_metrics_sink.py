"""The JSONL metrics sink: one line per step, resume truncation, torn last lines ignored."""

from __future__ import annotations

import json

from rlsd.train.metrics import JsonlSink, read_metrics


def test_resume_drops_steps_after_the_checkpoint_and_torn_lines(tmp_path):
    path = tmp_path / "m.jsonl"
    sink = JsonlSink(path)
    for step in (1, 2, 3, 4):
        sink.log(step, {"reward/mean": step / 10, "bad": float("nan")})
    sink.close()
    with open(path, "a") as fh:
        fh.write('{"step": 5, "rew')  # a kill mid-write
    assert [r["step"] for r in read_metrics(path)] == [1, 2, 3, 4]
    assert read_metrics(path)[0]["bad"] is None, "NaN is written as null, keeping valid JSON"
    resumed = JsonlSink(path, resume_from_step=2)
    resumed.log(3, {"reward/mean": 0.9})
    resumed.close()
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3] and rows[-1]["reward/mean"] == 0.9
