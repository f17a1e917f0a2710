"""Smoke test of the real-server harness (tests/helpers/servers.py): a Prefect flow logging to
MLflow, and a flow paused for typed human input and resumed through the API, all against real
Prefect and MLflow servers on PostgreSQL.

How pause/resume with typed input works against a Prefect 3.9 server (what ``rlsd approve
<flow-run-id>`` builds on; read from prefect/flow_runs.py, prefect/input/run_input.py and
prefect/server/api/flow_runs.py, and checked by :func:`test_pause_resume_with_typed_input`):

* In the flow, ``prefect.flow_runs.pause_flow_run(wait_for_input=Model, timeout=...,
  poll_interval=...)`` where ``Model`` subclasses ``prefect.input.RunInput`` (a pydantic model,
  ``extra="forbid"``; any pydantic-compatible type also works, wrapped in a generated
  ``RunInput``). It proposes a ``Paused`` state (``reschedule=False``,
  ``pause_key=str(n)`` for the n-th pause in this run, ``pause_timeout=now+timeout``) whose
  ``state_details.run_input_keyset`` is ``{"schema": "paused-<n>-schema", "response":
  "paused-<n>-response", "description": "paused-<n>-description"}``, THEN stores the model's
  JSON schema as flow-run input ``paused-<n>-schema``. There is a short window where the run is
  already PAUSED but has no schema yet: a resume in that window is rejected with "Run input
  schema not found." -- a resumer must wait for (or retry until) the schema key exists.
* The flow's process stays alive and blocks (``pause_flow_run`` is not ``suspend_flow_run``: no
  deployment/worker is needed to continue, but the process must still be running). It polls
  ``read_flow_run`` every ``poll_interval`` seconds (default 10 s: resume latency is up to that
  long) until the state is RUNNING, then loads and validates ``paused-<n>-response`` and returns
  a ``Model`` instance. No resume within ``timeout`` (default 3600 s): the flow raises
  ``FlowPauseTimeout`` and the run ends FAILED. The server enforces the deadline too: its
  pause-expirations service fails runs whose ``pause_timeout`` passed (then ``resume_flow_run``
  raises ``NotPausedError``), and a resume after the deadline but before that service ran is
  rejected with the run set FAILED (``resume_flow_run`` raises ``FlowPauseTimeout``).
* From anywhere with ``PREFECT_API_URL``: ``prefect.flow_runs.resume_flow_run(flow_run_id,
  run_input={...})`` (sync; ``aresume_flow_run`` is the async one) reads the run, raises
  ``prefect.exceptions.NotPausedError`` unless it is PAUSED, then POSTs
  ``/api/flow_runs/<id>/resume`` with ``{"run_input": {...}}``. The SERVER hydrates the input
  (only ``{"__prefect_kind": ...}`` values; plain strings such as ``"{{ x }}"`` are kept as
  they are) and validates it against the stored JSON schema; invalid or missing input (e.g.
  ``decision="maybe"``, or no ``run_input`` at all when the model has required fields) is
  REJECTED -- the run stays PAUSED and ``resume_flow_run`` raises ``RuntimeError("Cannot resume
  this run: Reason: ...")``, so a CLI can report the reason and let the user try again. Valid
  input: the server sets the run RUNNING and stores the input as ``paused-<n>-response``
  (readable later with ``prefect.input.actions.read_flow_run_input(key, flow_run_id=...)`` or
  ``client.read_flow_run_input(flow_run_id, key)``: an audit trail of who approved what).
* The approver's identity is whatever the input says (the API has no notion of the caller on a
  self-hosted server without auth); record it in the input model, as the ``approver`` field
  here does.
* Paused runs can be listed with ``client.read_flow_runs(flow_run_filter=FlowRunFilter(state=
  FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))))``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.helpers.servers import PrefectMlflowServers, http_get

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

T = TypeVar("T")

MLFLOW_FLOW = textwrap.dedent(
    '''
    """A tiny flow that logs a run to MLflow, tagged with its Prefect flow-run id."""
    import json
    import sys
    import time
    from pathlib import Path

    import mlflow
    from mlflow.entities import Metric
    from prefect import flow, task
    from prefect.runtime import flow_run


    @task
    def write_report(out_dir: str, token: str) -> str:
        path = Path(out_dir) / "report.json"
        path.write_text(json.dumps({"token": token, "ok": True}, sort_keys=True))
        return str(path)


    @flow(name="rlsd-smoke-mlflow")
    def smoke(out_dir: str, experiment: str, token: str) -> str:
        flow_run_id = flow_run.id
        report = write_report(out_dir, token)
        mlflow.set_experiment(experiment)
        with mlflow.start_run(run_name="smoke") as run:
            mlflow.set_tag("prefect.flow_run_id", flow_run_id)
            mlflow.log_param("token", token)
            now_ms = int(time.time() * 1000)
            mlflow.MlflowClient().log_batch(
                run.info.run_id,
                metrics=[Metric("loss", 1.0 / (step + 1), now_ms, step) for step in range(5)],
            )
            mlflow.log_artifact(report, artifact_path="reports")
        print("RESULT=" + json.dumps(
            {"flow_run_id": flow_run_id, "mlflow_run_id": run.info.run_id}), flush=True)
        return run.info.run_id


    if __name__ == "__main__":
        smoke(*sys.argv[1:4])
    '''
)

APPROVAL_FLOW = textwrap.dedent(
    '''
    """A flow that pauses for a typed human decision, as the pipeline's approval gate does."""
    import json
    from typing import Literal

    from prefect import flow
    from prefect.flow_runs import pause_flow_run
    from prefect.input import RunInput
    from prefect.runtime import flow_run


    class Approval(RunInput):
        decision: Literal["approve", "reject"]
        approver: str
        reason: str


    @flow(name="rlsd-smoke-approval")
    def gate() -> str:
        print(f"FLOW_RUN_ID={flow_run.id}", flush=True)
        approval = pause_flow_run(wait_for_input=Approval, timeout=120, poll_interval=1)
        print("APPROVAL=" + json.dumps(
            {"type": type(approval).__name__, **approval.model_dump()}), flush=True)
        return approval.decision


    if __name__ == "__main__":
        gate()
    '''
)


def _client_env(servers: PrefectMlflowServers) -> dict[str, str]:
    return {**os.environ, **servers.env(), "PYTHONUNBUFFERED": "1"}


def _wait_for(what: str, probe: Callable[[], T | None], timeout_s: float, step_s: float = 0.5) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(step_s)


def _prefect_client():
    """A sync Prefect client (on the test server inside :func:`_prefect_settings`)."""
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def _prefect_settings(servers: PrefectMlflowServers):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    return temporary_settings(updates={PREFECT_API_URL: servers.prefect.api_url})


def _lines_with(prefix: str, text: str) -> list[str]:
    return [line[len(prefix) :] for line in text.splitlines() if line.startswith(prefix)]


def _db_rows(url: str, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(sa.text(sql), params)]
    finally:
        engine.dispose()


def test_servers_are_up_on_postgres(prefect_mlflow_servers: PrefectMlflowServers) -> None:
    servers = prefect_mlflow_servers
    print(f"\nstart-up: {servers.startup_s}; Prefect UI: {servers.prefect.ui_url}")
    assert servers.prefect.running and servers.mlflow.running
    assert servers.prefect.api_url.startswith("http://127.0.0.1:")
    assert servers.prefect.api_url.endswith("/api")
    assert servers.prefect.database_url.startswith("postgresql+asyncpg://")
    assert servers.mlflow.backend_store_uri.startswith("postgresql+psycopg://")
    env = servers.env()
    assert env["PREFECT_API_URL"] == servers.prefect.api_url
    assert env["MLFLOW_TRACKING_URI"] == servers.mlflow.tracking_uri
    # both schemas were migrated into PostgreSQL (not a SQLite file in PREFECT_HOME)
    assert _db_rows(servers.prefect.sync_database_url, "SELECT count(*) FROM alembic_version")
    assert _db_rows(servers.mlflow.backend_store_uri, "SELECT count(*) FROM experiments")
    assert not list(servers.prefect.home.glob("*.db"))
    # the UI is served (the end-to-end test may print its URL for a human to follow)
    status, body = http_get(servers.prefect.ui_url)
    assert status == 200 and b"<html" in body.lower()


def test_flow_logs_to_mlflow(prefect_mlflow_servers: PrefectMlflowServers, tmp_path: Path) -> None:
    import mlflow

    servers = prefect_mlflow_servers
    flow_file = tmp_path / "smoke_flow.py"
    flow_file.write_text(MLFLOW_FLOW)
    token = uuid.uuid4().hex
    experiment = f"rlsd-smoke-{token[:8]}"
    proc = subprocess.run(
        [sys.executable, str(flow_file), str(tmp_path), experiment, token],
        capture_output=True,
        text=True,
        env=_client_env(servers),
        cwd=tmp_path,
        timeout=240,
    )
    assert proc.returncode == 0, (
        f"flow failed ({proc.returncode})\n--- stdout ---\n{proc.stdout[-4000:]}\n"
        f"--- stderr ---\n{proc.stderr[-6000:]}\n{servers.log_tails()}"
    )
    (result,) = _lines_with("RESULT=", proc.stdout)
    ids = json.loads(result)
    flow_run_id = uuid.UUID(ids["flow_run_id"])

    # Prefect: the run, as the server saw it
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with _prefect_settings(servers), _prefect_client() as client:
        flow_run = client.read_flow_run(flow_run_id)
        assert flow_run.state is not None and flow_run.state.is_completed(), flow_run.state
        assert client.read_flow(flow_run.flow_id).name == "rlsd-smoke-mlflow"

        # task runs arrive through events (the task-run recorder service): give it a moment
        def task_runs_done() -> list[Any] | None:
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
            done = [r for r in runs if r.state is not None and r.state.is_completed()]
            return done or None

        task_runs = _wait_for("the task run to be recorded", task_runs_done, 60)
        assert [r.task_key.split("-")[0] for r in task_runs] == ["write_report"]

    # MLflow: find the run by the Prefect tag, then check what the flow logged
    client = mlflow.MlflowClient(tracking_uri=servers.mlflow.tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None
    runs = client.search_runs(
        [exp.experiment_id], filter_string=f"tags.`prefect.flow_run_id` = '{flow_run_id}'"
    )
    assert [r.info.run_id for r in runs] == [ids["mlflow_run_id"]]
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params == {"token": token}
    history = client.get_metric_history(run.info.run_id, "loss")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [
        (step, 1.0 / (step + 1)) for step in range(5)
    ]
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # proxied by the server
    assert [a.path for a in client.list_artifacts(run.info.run_id, "reports")] == [
        "reports/report.json"
    ]
    local = client.download_artifacts(run.info.run_id, "reports/report.json", str(tmp_path))
    expected = json.dumps({"token": token, "ok": True}, sort_keys=True)
    assert Path(local).read_text() == expected
    # ...and the server stored it under its --artifacts-destination
    stored = list(servers.mlflow.artifacts_dir.rglob(f"{run.info.run_id}/**/report.json"))
    assert len(stored) == 1 and stored[0].read_text() == expected

    # both servers really keep their state in PostgreSQL
    assert _db_rows(
        servers.prefect.sync_database_url,
        "SELECT state_type FROM flow_run WHERE id = :id",
        id=flow_run_id,
    ) == [("COMPLETED",)]
    assert _db_rows(
        servers.mlflow.backend_store_uri,
        "SELECT r.status, t.value FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
        "WHERE r.run_uuid = :id AND t.key = 'prefect.flow_run_id'",
        id=run.info.run_id,
    ) == [("FINISHED", str(flow_run_id))]


def test_pause_resume_with_typed_input(
    prefect_mlflow_servers: PrefectMlflowServers, tmp_path: Path
) -> None:
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.exceptions import NotPausedError
    from prefect.flow_runs import resume_flow_run
    from prefect.input.actions import read_flow_run_input

    servers = prefect_mlflow_servers
    flow_file = tmp_path / "approval_flow.py"
    flow_file.write_text(APPROVAL_FLOW)
    out_file = tmp_path / "approval.out"
    with out_file.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, str(flow_file)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=_client_env(servers),
            cwd=tmp_path,
        )
    try:

        def output() -> str:
            return out_file.read_text(errors="replace")

        def diagnostics() -> str:
            return f"--- flow output ---\n{output()[-6000:]}\n{servers.log_tails()}"

        def flow_run_id_printed() -> uuid.UUID | None:
            if proc.poll() is not None:
                raise AssertionError(f"flow exited early ({proc.returncode})\n{diagnostics()}")
            found = _lines_with("FLOW_RUN_ID=", output())
            return uuid.UUID(found[0]) if found else None

        flow_run_id = _wait_for("the flow to start", flow_run_id_printed, 120)

        with _prefect_settings(servers), _prefect_client() as client:

            def paused_state():
                if proc.poll() is not None:
                    raise AssertionError(f"flow exited ({proc.returncode})\n{diagnostics()}")
                state = client.read_flow_run(flow_run_id).state
                return state if state is not None and state.is_paused() else None

            state = _wait_for("the flow run to pause", paused_state, 60)
            keyset = state.state_details.run_input_keyset
            assert keyset == {
                "description": "paused-1-description",
                "response": "paused-1-response",
                "schema": "paused-1-schema",
            }
            assert state.state_details.pause_timeout is not None

            # the schema is stored just AFTER the state turns PAUSED: wait for it
            schema = _wait_for(
                "the run-input schema",
                lambda: read_flow_run_input(keyset["schema"], flow_run_id=flow_run_id),
                30,
            )
            assert set(schema["required"]) == {"decision", "approver", "reason"}
            assert schema["properties"]["decision"]["enum"] == ["approve", "reject"]

            # an approval CLI can list the runs waiting for a decision
            paused = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    id=FlowRunFilterId(any_=[flow_run_id]),
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED])),
                )
            )
            assert [r.id for r in paused] == [flow_run_id]

            # the server validates the input against the schema and rejects bad input...
            bad = {"decision": "maybe", "approver": "alice", "reason": "unsure"}
            with pytest.raises(RuntimeError, match="Cannot resume this run"):
                resume_flow_run(flow_run_id, run_input=bad)
            with pytest.raises(RuntimeError, match="Cannot resume this run"):
                resume_flow_run(flow_run_id)  # no input at all: required fields missing
            # ...leaving the run paused
            assert client.read_flow_run(flow_run_id).state.is_paused()

            decision = {
                "decision": "approve",
                "approver": "alice@example.org",
                "reason": "eval within budget {{ not a template }}",
            }
            resume_flow_run(flow_run_id, run_input=decision)

            try:
                proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"flow did not finish after resume\n{diagnostics()}") from None
            assert proc.returncode == 0, diagnostics()
            (printed,) = _lines_with("APPROVAL=", output())
            assert json.loads(printed) == {"type": "Approval", **decision}

            flow_run = client.read_flow_run(flow_run_id)
            assert flow_run.state is not None and flow_run.state.is_completed(), flow_run.state
            # the decision stays on the server as the run's input: an audit trail
            assert read_flow_run_input(keyset["response"], flow_run_id=flow_run_id) == decision
            history = [s.type for s in client.read_flow_run_states(flow_run_id)]
            assert history[-3:] == [StateType.PAUSED, StateType.RUNNING, StateType.COMPLETED]
            # resuming a run that is not paused is refused (client side, before any POST)
            with pytest.raises(NotPausedError):
                resume_flow_run(flow_run_id, run_input=decision)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
