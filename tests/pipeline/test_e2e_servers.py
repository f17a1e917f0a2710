"""End to end through real servers: PostgreSQL-backed Prefect and MLflow servers on loopback,
`prefect deploy --all` from the repository's prefect.yaml, a process worker, a run triggered
through the server, the gate's pause answered with `rlsd approve`, and the alias moved in MLflow.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.pipeline.test_retrain_flow import pipeline_config, write_policy

pytestmark = pytest.mark.docker

BIN = Path(sys.executable).parent


def _env(servers, tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env.update(servers.env())
    env.update(
        RLSD_HOME=str(REPO),  # prefect.yaml's pull step: the worker runs flows from the checkout
        PYTHONPATH=str(REPO),
        OMP_NUM_THREADS="1",
        RLSD_NO_PROGRESS="1",
        COLUMNS="200",
    )
    return env


def _cli(args: list[str], env: dict[str, str], cwd: Path, timeout: int = 300) -> str:
    proc = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{args}: {proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def _state(flow_run_id: str):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id).state


def _wait(flow_run_id: str, until: set[str], timeout: float, worker_log: Path) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = _state(flow_run_id)
        if state is not None and state.type.value in until:
            return state.type.value
        if state is not None and state.is_final():
            break
        time.sleep(2)
    raise AssertionError(
        f"flow run {flow_run_id} is {state.type.value if state else None}, not {until}; "
        f"worker log:\n{worker_log.read_text()[-6000:]}"
    )


@pytest.fixture
def prefect_client_of(prefect_mlflow_servers):
    """This process's Prefect client on the test's server. Setting PREFECT_API_URL in the
    environment is not enough here: an earlier test module may have imported prefect, whose
    settings were read then, and a client without a URL starts a throwaway server of its own."""
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    servers = prefect_mlflow_servers
    with temporary_settings(updates={PREFECT_API_URL: servers.prefect.api_url,
                                     PREFECT_HOME: str(servers.prefect.home)}):  # fmt: skip
        yield servers


def test_deployed_retrain_waits_for_approval_through_the_api_then_moves_the_alias(
    prefect_client_of, tiny_model_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    from rlsd.demo import build_demo_store

    servers = prefect_client_of
    env = _env(servers, tmp_path)
    for k, v in servers.env().items():
        monkeypatch.setenv(k, v)
    store = tmp_path / "demo.sqlite"
    build_demo_store(store, sql_tasks=0, json_tasks=0)
    human = write_policy(tmp_path, required=True, approvers=["e2e-reviewer"])
    config = pipeline_config(tmp_path, tiny_model_dir, store, registered_model="rlsd-e2e",
                             promotion_policy=str(human))  # fmt: skip
    from rlsd.gate import load_policy, policy_digest

    pinned = policy_digest(load_policy(human))

    prefect = str(BIN / "prefect")
    _cli([prefect, "work-pool", "create", "rlsd-process", "--type", "process",
          "--base-job-template", str(REPO / "infra/work-pools/process.json")], env, REPO)  # fmt: skip
    out = _cli([prefect, "--no-prompt", "deploy", "--all"], env, REPO)
    assert "weekly-retrain" in out and "nightly-verifier-inventory" in out
    listed = _cli([prefect, "deployment", "ls"], env, REPO)
    assert "retrain/weekly-retrain" in listed

    worker_log = tmp_path / "worker.log"
    with worker_log.open("w") as log:
        worker = subprocess.Popen(
            [prefect, "worker", "start", "--pool", "rlsd-process", "--limit", "1"],
            env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        from prefect.deployments import run_deployment

        run = run_deployment(
            "retrain/weekly-retrain",
            parameters={
                "config": str(config),
                "approval_timeout_s": 600,
                "policy_sha256": pinned,
            },  # this run's policy, as a deployment pins it
            timeout=0,
        )
        flow_run_id = str(run.id)
        assert _wait(flow_run_id, {"PAUSED"}, 600, worker_log) == "PAUSED"

        # an invalid answer is refused by the server against the input schema; the run stays
        # paused. Then the approval, through the API, from the terminal command.
        def answer(decision: str, approver: str, reason: str) -> tuple[int, str]:
            proc = subprocess.run(
                [str(BIN / "rlsd"), decision, flow_run_id, "--approver", approver,
                 "--reason", reason],
                env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            return proc.returncode, " ".join((proc.stdout + proc.stderr).split())

        _, said = answer("approve", " ", "x")
        assert _state(flow_run_id).type.value == "PAUSED", said
        # someone the policy does not name is refused with one line; the run stays paused
        rc, said = answer("approve", "mallory", "ship it")
        assert rc == 2 and "'mallory' may not decide this gate" in said, said
        assert "Traceback" not in said
        assert _state(flow_run_id).type.value == "PAUSED"
        _cli([str(BIN / "rlsd"), "approve", flow_run_id, "--approver", "e2e-reviewer",
              "--reason", "gate passed; reviewed the decision document"], env, tmp_path)  # fmt: skip
        # a second answer (a reviewer who lost the race) gets one clean line, and changes nothing
        rc, said = answer("reject", "e2e-reviewer", "too late")
        assert rc == 2 and "Traceback" not in said, said
        assert "not paused for approval" in said or "no longer waiting" in said, said
        assert _wait(flow_run_id, {"COMPLETED"}, 300, worker_log) == "COMPLETED"
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=servers.mlflow.tracking_uri)
    champ = client.get_model_version_by_alias("rlsd-e2e", "champion")
    tags = champ.tags
    assert tags["rlsd.approval.approver"] == "e2e-reviewer"
    assert tags["rlsd.approval.mode"] == "human" and tags["rlsd.gate.outcome"] == "promote"
    parent = client.get_run(tags["rlsd.pipeline_run_id"])
    # the MLflow run and the Prefect flow run point at each other
    assert parent.data.tags["prefect.flow_run_id"] == flow_run_id
    assert parent.data.tags["prefect.flow_run_url"].startswith(servers.prefect.ui_url.rstrip("/"))
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as pc:
        arts = pc.read_artifacts()
        assert f"mlflow-run:{parent.info.run_id}" in pc.read_flow_run(flow_run_id).tags
    keys = {a.key for a in arts if str(a.flow_run_id) == flow_run_id}
    assert {"verifier-inventory", "data-validation", "comparison", "promotion-gate",
            "mlflow-run", "outcome"} <= keys  # fmt: skip

    lineage = _cli([str(BIN / "rlsd"), "lineage", "rlsd-e2e@champion", "--policy", str(human)],
                   env, tmp_path)  # fmt: skip
    assert "e2e-reviewer" in lineage and flow_run_id in lineage
    assert "VERIFIED rlsd-e2e version" in " ".join(lineage.split())
