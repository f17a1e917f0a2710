"""`rlsd study` on the tiny model: pre-registration, paired seeds, resume after a kill, the
report and its plots. The statistics themselves are tested in test_study_stats.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from rlsd.study.config import StudyError, load_design
from rlsd.study.report import write_report
from rlsd.study.runner import load_scores, results_dir, run_keys, run_study
from tests.conftest import REPO

NOISY = ("time/", "perf/")  # wall-clock figures differ between any two runs


def _design(tmp: Path, model_dir: Path, **extra) -> Path:
    design = {
        "name": "tiny-study",
        "description": "Tiny-model smoke study.",
        "overrides": {
            "model.name_or_path": str(model_dir),
            "task.verifier": "toy-even-length",
            "task.arithmetic.n_train": 32,
            "task.arithmetic.n_heldout": 8,
            "rollout.group_size": 4,
            "rollout.prompts_per_step": 2,
            "rollout.max_batch_sequences": 16,
            "rollout.sampling.temperature": 1.0,
            "rollout.sampling.max_new_tokens": 8,
            "eval.max_new_tokens": 6,
            "run.micro_batch_sequences": 8,
            "run.num_threads": 1,
        },
        "arms": {"grpo": {"algo.name": "grpo"}, "rlsd": {"algo.name": "rlsd"}},
        "seeds": [0, 1],
        "steps": 4,
        "eval_every": 2,
        "eval_tasks": 8,
        "baseline": "grpo",
        "endpoint": {"arm": "rlsd", "versus": "grpo"},
        "bootstrap_samples": 500,
        "runs_dir": str(tmp / "runs"),
        **extra,
    }
    path = tmp / "study.yaml"
    path.write_text(yaml.safe_dump(design))
    return path


def _steps(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x]


def _steady(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith(NOISY)} for r in rows]


@pytest.fixture(scope="module")
def finished(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    tmp = tmp_path_factory.mktemp("study")
    design = load_design(_design(tmp, tiny_model_dir))
    study_dir = tmp / "studies" / design.name
    first = run_study(design, study_dir, max_runs=1, show_progress=False)
    assert [k.label for k in first] == ["grpo/seed-0"]  # seed-major: pairs complete early
    rest = run_study(design, study_dir, show_progress=False)
    assert [k.label for k in rest] == ["rlsd/seed-0", "grpo/seed-1", "rlsd/seed-1"]
    assert run_study(design, study_dir, show_progress=False) == []  # done runs are skipped
    return tmp, design, study_dir


def test_the_design_is_registered_before_the_first_run_and_may_not_change(finished) -> None:
    tmp, design, study_dir = finished
    recorded = json.loads((study_dir / "design.json").read_text())
    assert recorded["design"]["seeds"] == [0, 1] and len(recorded["digest"]) == 64
    changed = load_design(_design(tmp, Path(design.overrides["model.name_or_path"]), steps=6,
                                  eval_every=3))  # fmt: skip
    with pytest.raises(StudyError, match="A changed design is a new study"):
        run_study(changed, study_dir, show_progress=False)


def test_the_study_folder_keeps_small_outputs_only(finished) -> None:
    _, design, study_dir = finished
    for key in run_keys(design):
        d = results_dir(study_dir, key)
        names = {p.name for p in d.rglob("*") if p.is_file()}
        assert {"metrics.jsonl", "config.yaml", "done.json"} <= names
        assert {f"step-{s:05d}.json" for s in design.eval_steps} <= names
        assert not any(n.endswith((".safetensors", ".pt", ".bin")) for n in names)


def test_seeds_are_paired_across_arms(finished) -> None:
    """The first rollout comes before any update: with the same seed every arm samples the same
    responses from the same prompts; another seed samples others."""
    _, design, study_dir = finished
    first = {(k.arm, k.seed): _steps(results_dir(study_dir, k))[0] for k in run_keys(design)}
    for seed in design.seeds:
        g, r = first[("grpo", seed)], first[("rlsd", seed)]
        for key in ("reward/mean", "response/length_mean", "response/length_max"):
            assert g[key] == r[key], (seed, key)
    assert any(first[("grpo", 0)][k] != first[("grpo", 1)][k]
               for k in ("reward/mean", "response/length_mean"))  # fmt: skip
    cfg0 = yaml.safe_load((results_dir(study_dir, run_keys(design)[0]) / "config.yaml").read_text())
    cfg1 = yaml.safe_load((results_dir(study_dir, run_keys(design)[1]) / "config.yaml").read_text())
    assert cfg0["run"]["seed"] == cfg1["run"]["seed"] == 0
    assert {k: v for k, v in cfg0.items() if k not in ("algo", "run")} == {
        k: v for k, v in cfg1.items() if k not in ("algo", "run")
    }


def test_scores_cover_every_run_step_and_problem(finished) -> None:
    _, design, study_dir = finished
    scores = load_scores(study_dir, design)
    assert set(scores) == {"grpo", "rlsd"}
    for arm in scores:
        assert set(scores[arm]) == {0, 1}
        for seed in scores[arm]:
            assert sorted(scores[arm][seed]) == design.eval_steps
            ids = {frozenset(v) for v in scores[arm][seed].values()}
            assert len(ids) == 1 and len(next(iter(ids))) == design.eval_tasks


def test_the_report_and_plots_are_written(finished) -> None:
    _, design, study_dir = finished
    text = write_report(design, study_dir)
    assert (study_dir / "report.md").read_text() == text
    assert ("**Supported**" in text) != ("**Not supported**" in text)  # complete: a verdict
    for needle in ("## Result", "Primary endpoint", "hierarchical bootstrap", "t over seeds",
                   "steps to threshold", "Every seed", "seed 1", "runs finished | 4 of 4"):  # fmt: skip
        assert needle in text, needle
    for name in ("accuracy", "paired_difference", "entropy", "clip_fraction"):
        assert (study_dir / "plots" / f"{name}.png").stat().st_size > 5000, name


def test_a_killed_study_resumes_and_matches_an_uninterrupted_one(
    finished, tiny_model_dir: Path, tmp_path: Path
) -> None:
    _, design, done_dir = finished
    path = _design(tmp_path, tiny_model_dir)
    study_dir = tmp_path / "studies" / design.name
    code = ("import sys; from pathlib import Path; from rlsd.study.config import load_design; "
            "from tests.helpers.toy_verifier import register; register(); "
            "from rlsd.study.runner import run_study; "
            f"run_study(load_design({str(path)!r}), Path({str(study_dir)!r}), max_runs=1, "
            "show_progress=False)")  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "RLSD_NO_PROGRESS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=tmp_path,
                            start_new_session=True)  # fmt: skip
    ckpts = tmp_path / "runs" / design.name / "grpo" / "seed-0" / "checkpoints"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not any(ckpts.glob("step-*")):
        assert proc.poll() is None, "the run ended before its first checkpoint"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    key = run_keys(design)[0]
    assert not (results_dir(study_dir, key) / "done.json").exists()
    resumed = run_study(load_design(path), study_dir, max_runs=1, show_progress=False)
    assert [k.label for k in resumed] == ["grpo/seed-0"]
    again = _steps(results_dir(study_dir, key))
    assert [r["step"] for r in again] == list(range(1, design.steps + 1))
    assert _steady(again) == _steady(_steps(results_dir(done_dir, key)))
    for s in design.eval_steps:
        name = f"eval/step-{s:05d}.json"
        a = json.loads((results_dir(study_dir, key) / name).read_text())
        b = json.loads((results_dir(done_dir, key) / name).read_text())
        assert a["rows"] == b["rows"], name


def test_a_partial_study_reports_the_pairs_it_has(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Two arms of three, one seed of two: the finished pair is compared, marked incomplete."""
    path = _design(tmp_path, tiny_model_dir, arms={
        "grpo": {"algo.name": "grpo"}, "rlsd": {"algo.name": "rlsd"},
        "opsd": {"algo.name": "opsd"}})  # fmt: skip
    design = load_design(path)
    study_dir = tmp_path / "studies" / design.name
    run_study(design, study_dir, max_runs=2, show_progress=False)
    text = write_report(design, study_dir)
    # (the YAML lists the arms alphabetically: grpo, opsd, rlsd; seed-major order runs grpo and
    # opsd of seed 0 first)
    assert "analysed arms ['grpo', 'opsd'], seeds [0] of [0, 1]" in text
    assert "runs finished | 2 of 6" in text and "## Result" in text
    assert "| rlsd |" not in text and "rlsd has not finished a paired seed yet" in text
    assert "Supported" not in text  # no verdict before the registered design is complete
    assert (study_dir / "plots" / "accuracy.png").exists()
