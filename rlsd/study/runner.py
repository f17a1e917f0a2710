"""Run a study: every arm x seed as an ordinary resumable training run, the small outputs kept
in the study folder as each run finishes.

Layout of ``studies/<name>/`` (committed; small)::

    design.json               the design and its digest, written before the first run
    results/<arm>/seed-<s>/   metrics.jsonl, eval/step-*.json, config.yaml, done.json
    report.md, plots/         written by :mod:`rlsd.study.report`

Checkpoints and weights go to ``<runs_dir>/<name>/<arm>/seed-<s>/`` (not committed). A run
whose ``done.json`` exists is skipped; any other resumes from its latest checkpoint, so a
study can be stopped at any moment and continued by another process or on another machine that
has the same folder. Runs go seed by seed (every arm of seed 0, then of seed 1), so a partial
study already holds complete pairs.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlsd.study.config import StudyDesign, StudyError, design_digest

log = logging.getLogger("rlsd.study")

#: the small outputs of a run that the study keeps (no checkpoints, no weights)
KEPT = ("metrics.jsonl", "config.yaml", "dataset.json")


@dataclass(frozen=True)
class RunKey:
    arm: str
    seed: int

    @property
    def label(self) -> str:
        return f"{self.arm}/seed-{self.seed}"


def run_keys(design: StudyDesign) -> list[RunKey]:
    """Seed-major order: each seed's arms together, so pairs complete early."""
    return [RunKey(arm, seed) for seed in design.seeds for arm in design.arms]


def results_dir(study_dir: Path, key: RunKey) -> Path:
    return study_dir / "results" / key.arm / f"seed-{key.seed}"


def run_overrides(design: StudyDesign, key: RunKey, output_dir: Path) -> dict[str, Any]:
    """The trainer overrides of one run: the study's, the arm's, then what the study fixes."""
    return {
        **design.overrides,
        **design.arms[key.arm],
        "run.seed": key.seed,
        "run.steps": design.steps,
        # a checkpoint at every evaluation, so a resumed run never evaluates a step twice
        "run.checkpoint_every": design.eval_every,
        "run.output_dir": str(output_dir),
        "eval.num_tasks": design.eval_tasks,
        "eval.every": design.eval_every,
        "eval.before": True,
        "eval.after": True,
    }


def check_design(study_dir: Path, design: StudyDesign) -> str:
    """Record the design before the first run; refuse one that differs from the recorded one."""
    digest = design_digest(design)
    path = study_dir / "design.json"
    if path.exists():
        recorded = json.loads(path.read_text(encoding="utf-8"))
        if recorded.get("digest") != digest:
            raise StudyError(
                f"{path}: this study was designed with digest {recorded.get('digest', '?')[:12]}…;"
                f" the design given now is {digest[:12]}…. A changed design is a new study: "
                "give it another name"
            )
        return digest
    study_dir.mkdir(parents=True, exist_ok=True)
    _write_json(path, {"digest": digest, "design": design.model_dump(mode="json"),
                       "registered_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})  # fmt: skip
    return digest


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def keep_outputs(run_dir: Path, dest: Path) -> None:
    """Copy a run's small outputs into the study folder (atomically per file)."""
    (dest / "eval").mkdir(parents=True, exist_ok=True)
    for name in KEPT:
        if (run_dir / name).exists():
            shutil.copyfile(run_dir / name, dest / f"{name}.tmp")
            os.replace(dest / f"{name}.tmp", dest / name)
    for f in sorted((run_dir / "eval").glob("step-*.json")):
        shutil.copyfile(f, dest / "eval" / f"{f.name}.tmp")
        os.replace(dest / "eval" / f"{f.name}.tmp", dest / "eval" / f.name)


TrainFn = Callable[..., Any]


def run_study(
    design: StudyDesign,
    study_dir: Path,
    *,
    only: set[str] | None = None,
    max_runs: int | None = None,
    sinks_for: Callable[[RunKey], Iterator[tuple[Any, ...]]] | None = None,
    show_progress: bool = True,
) -> list[RunKey]:
    """Run (or resume) every run not done yet; return the runs finished by this call.

    ``sinks_for(key)``: a context manager yielding extra metric sinks for the run (MLflow).
    ``max_runs`` stops after that many runs (a session's budget); ``only`` limits the arms.
    """
    from rlsd.configs import DEFAULT_CONFIG
    from rlsd.train.config import dump_config, load_config
    from rlsd.train.trainer import train

    digest = check_design(study_dir, design)
    finished: list[RunKey] = []
    for key in run_keys(design):
        if only is not None and key.arm not in only:
            continue
        dest = results_dir(study_dir, key)
        if (dest / "done.json").exists():
            continue
        if max_runs is not None and len(finished) >= max_runs:
            break
        run_dir = Path(design.runs_dir) / design.name / key.arm / f"seed-{key.seed}"
        cfg = load_config(design.train_config or DEFAULT_CONFIG,
                          run_overrides(design, key, run_dir))  # fmt: skip
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(dump_config(cfg), encoding="utf-8")
        log.info("study %s: %s (%d steps)", design.name, key.label, design.steps)
        cpu0, wall0 = time.process_time(), time.monotonic()
        if sinks_for is None:
            train(cfg, resume=True, show_progress=show_progress)
        else:
            with sinks_for(key) as sinks:
                train(cfg, resume=True, sinks=sinks, show_progress=show_progress)
        keep_outputs(run_dir, dest)
        _write_json(dest / "done.json", {
            "design_digest": digest, "arm": key.arm, "seed": key.seed,
            # this process's share: a resumed run's earlier sessions add theirs
            "cpu_seconds": round(time.process_time() - cpu0, 1),
            "wall_seconds": round(time.monotonic() - wall0, 1),
        })  # fmt: skip
        finished.append(key)
    return finished


def load_scores(
    study_dir: Path, design: StudyDesign
) -> dict[str, dict[int, dict[int, dict[str, float]]]]:
    """``scores[arm][seed][step] -> {problem id: 0/1}`` of every finished run's evaluations."""
    out: dict[str, dict[int, dict[int, dict[str, float]]]] = {}
    for key in run_keys(design):
        dest = results_dir(study_dir, key)
        if not (dest / "done.json").exists():
            continue
        steps: dict[int, dict[str, float]] = {}
        for step in design.eval_steps:
            path = dest / "eval" / f"step-{step:05d}.json"
            if not path.exists():
                raise StudyError(f"{path}: the run is marked done but this evaluation is missing")
            rows = json.loads(path.read_text(encoding="utf-8"))["rows"]
            steps[step] = {r["id"]: float(r["passed"]) for r in rows}
        out.setdefault(key.arm, {})[key.seed] = steps
    return out


def load_curves(study_dir: Path, design: StudyDesign) -> dict[str, dict[int, list[dict]]]:
    """``curves[arm][seed]`` -> the run's per-step metric rows (entropy, clip fraction, ...)."""
    out: dict[str, dict[int, list[dict]]] = {}
    for key in run_keys(design):
        path = results_dir(study_dir, key) / "metrics.jsonl"
        if (results_dir(study_dir, key) / "done.json").exists() and path.exists():
            rows = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x]
            out.setdefault(key.arm, {})[key.seed] = rows
    return out


def cpu_seconds(study_dir: Path, design: StudyDesign) -> float:
    total = 0.0
    for key in run_keys(design):
        done = results_dir(study_dir, key) / "done.json"
        if done.exists():
            total += float(json.loads(done.read_text()).get("cpu_seconds", 0.0))
    return total
