"""MLflow runs: where tracking goes by default, what every run records, batched metrics.

With no configuration MLflow writes to SQLite and a local artifact folder under ``runs/mlflow``
(the embedded default); ``MLFLOW_TRACKING_URI`` points it at a server instead. Metrics go in
batches (``log_batch``): one call per optimizer step, never one per value.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

from rlsd.configs.loading import flatten
from rlsd.tracking import conventions as C
from rlsd.uris import mask_uri

DEFAULT_DIR = Path("runs/mlflow")
#: MLflow's switch for its "View run at <URL>" line on stdout
SUPPRESS_URL_PRINT = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"
#: Packages whose versions every pipeline run records.
KEY_PACKAGES = (
    "rlsd", "torch", "transformers", "accelerate", "peft", "mlflow", "prefect",
    "great-expectations", "sqlalchemy", "pydantic", "docker", "numpy",
)  # fmt: skip


def tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI``, else SQLite under ``runs/mlflow`` (created on first use)."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    DEFAULT_DIR.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(DEFAULT_DIR / 'mlflow.db').resolve()}"


def configure(uri: str | None = None) -> str:
    """Point MLflow at ``uri`` (default :func:`tracking_uri`) and return it, unmasked: it is
    for MLflow, never for display (:func:`rlsd.uris.mask_uri` is)."""
    import logging

    import mlflow

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # alembic narrates every migration of a fresh SQLite store at INFO
    logging.getLogger("alembic").setLevel(logging.WARNING)
    uri = uri or tracking_uri()
    if mask_uri(uri) != uri:
        # MLflow prints "View run ... at: <tracking URI>/#/..." to stdout at the end of every
        # run on an http(s) server, userinfo and all
        os.environ.setdefault(SUPPRESS_URL_PRINT, "true")
    mlflow.set_tracking_uri(uri)
    return uri


def experiment_id(name: str) -> str:
    """The experiment's id, creating it (with a local artifact root for SQLite) if needed."""
    import mlflow

    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    if mlflow.get_tracking_uri().startswith("sqlite:"):
        location = (DEFAULT_DIR / "artifacts").resolve().as_uri()
    try:
        return mlflow.create_experiment(name, artifact_location=location)
    except Exception:  # noqa: BLE001 - created concurrently by another process
        exp = mlflow.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def git_sha(repo: Path | None = None) -> str:
    """The checkout's commit (``+dirty`` with local changes); images without .git set
    ``RLSD_GIT_SHA`` at build time."""
    if os.environ.get("RLSD_GIT_SHA"):
        return os.environ["RLSD_GIT_SHA"]
    repo = repo or Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10,
        ).stdout.strip()  # fmt: skip
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_versions() -> dict[str, str]:
    out = {}
    for name in KEY_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def environment_tags() -> dict[str, str]:
    return {C.GIT_SHA: git_sha(), C.RLSD_VERSION: package_versions()["rlsd"]}


@contextmanager
def stage_run(
    parent_run_id: str,
    stage: str,
    *,
    arm: str | None = None,
    tags: dict[str, str] | None = None,
) -> Iterator[Any]:
    """A nested MLflow run for one stage (or arm) of the pipeline run ``parent_run_id``.

    Stages run in Prefect task threads, where MLflow's active-run stack is empty, so the parent
    is named explicitly rather than taken from the stack.
    """
    import mlflow

    parent = mlflow.get_run(parent_run_id)
    name = stage if arm is None else f"{stage}:{arm}"
    all_tags = {
        C.KIND: "stage",
        C.STAGE: stage,
        C.PIPELINE_RUN: parent_run_id,
        **{k: v for k, v in parent.data.tags.items() if k.startswith("prefect.")},
        **(tags or {}),
    }
    if arm is not None:
        all_tags[C.ARM] = arm
    with mlflow.start_run(
        run_name=name,
        experiment_id=parent.info.experiment_id,
        nested=True,
        parent_run_id=parent_run_id,
        tags=all_tags,
    ) as run:
        yield run


class MlflowMetricsSink:
    """A trainer metrics sink: one ``log_batch`` per optimizer step (non-finite values skipped)."""

    def __init__(self, run_id: str, prefix: str = "") -> None:
        from mlflow import MlflowClient

        self.client = MlflowClient()
        self.run_id = run_id
        self.prefix = prefix

    def log(self, step: int, metrics: dict[str, float]) -> None:
        import math

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [
            Metric(
                key=self.prefix + k.replace("@", "_at_"), value=float(v), timestamp=now, step=step
            )
            for k, v in metrics.items()
            if isinstance(v, int | float) and math.isfinite(float(v))
        ]
        for i in range(0, len(batch), 1000):  # MLflow's per-call limit
            self.client.log_batch(self.run_id, metrics=batch[i : i + 1000])

    def close(self) -> None:
        pass


def log_json(obj: Any, artifact_file: str) -> None:
    import mlflow

    mlflow.log_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n", artifact_file)


def flatten_params(d: dict[str, Any]) -> dict[str, str]:
    """Nested config -> ``section.field`` params (MLflow caps a value at 6000 characters)."""
    return {k: str(v)[:6000] for k, v in flatten(d).items()}


def log_params(params: dict[str, str]) -> None:
    import mlflow
    from mlflow import MlflowClient
    from mlflow.entities import Param

    run = mlflow.active_run()
    items = [Param(k, v) for k, v in params.items()]
    for i in range(0, len(items), 100):
        MlflowClient().log_batch(run.info.run_id, params=items[i : i + 100])
