"""The retrain flow for real: Prefect's temporary local API, MLflow on SQLite, the demo store,
the Docker (or local) sandbox, a tiny model. Two pipeline runs against one registry: the first
promotes (auto-approval, recorded as such); the second evaluates the champion and is rejected by
its gate, leaving the alias where it was. Then the lineage of the champion, from MLflow alone."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

pytestmark = pytest.mark.docker


def _env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PYTHONPATH=str(REPO),
        OMP_NUM_THREADS="1",
        RLSD_NO_PROGRESS="1",
        PREFECT_HOME=str(tmp / "prefect-home"),
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        MLFLOW_DISABLE_TELEMETRY="true",
        MLFLOW_TRACKING_URI=f"sqlite:///{tmp / 'mlflow.db'}",
    )
    return env


def write_policy(tmp: Path, **approval: object) -> Path:
    """A promotion policy for runs of a tiny model on 8 tasks: no gain can be shown, so the gain
    rules admit anything; signed with a key made for the test (`rlsd keys init` does the same)."""
    from rlsd.gate.signing import PUBLIC_KEY_NAME, generate_key_pair

    keys = tmp / "keys"
    if not (keys / PUBLIC_KEY_NAME).exists():
        generate_key_pair(keys)
    policy = {
        "min_gain_over_control": -1.0,
        "min_gain_over_champion": -1.0,
        "require_docker_sandbox": False,
        "approval": {"required": False, **approval},
        "signing": {"public_key": str(keys / PUBLIC_KEY_NAME)},
    }
    path = tmp / f"policy-{len(list(tmp.glob('policy-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(policy))
    return path


def pipeline_config(tmp: Path, model_dir: Path, store: Path, **extra: object) -> Path:
    """A pipeline YAML that runs every stage in seconds (tiny model, two steps, 8 eval tasks)."""
    from rlsd.gate.signing import PRIVATE_KEY_NAME

    extra.setdefault("promotion_policy", str(write_policy(tmp)))
    verifiers = tmp / "verifiers"
    if not verifiers.exists():  # only the verifier the arithmetic domain needs
        verifiers.mkdir()
        shutil.copytree(REPO / "verifiers" / "math-answer", verifiers / "math-answer",
                        ignore=shutil.ignore_patterns("build"))  # fmt: skip
    cfg = {
        "work_dir": str(tmp / "pipeline"),
        "demo_store": str(store),
        "snapshots_dir": str(tmp / "snapshots"),
        "verifiers_root": str(verifiers),
        "source_names": ["demo-arithmetic"],
        "domains": ["arithmetic"],
        "eval_tasks": 8,
        "train_overrides": {
            "model.name_or_path": str(model_dir),
            "run.steps": 2,
            "rollout.group_size": 4,
            "rollout.prompts_per_step": 2,
            "rollout.sampling.max_new_tokens": 8,
            "eval.max_new_tokens": 6,
            "run.num_threads": 1,
        },
        "signing_key_file": str(tmp / "keys" / PRIVATE_KEY_NAME),
        **extra,
    }
    path = tmp / f"pipeline-{len(list(tmp.glob('pipeline-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_retrain(tmp: Path, config: Path, **kwargs: object) -> dict:
    code = (
        "import json, sys; from flows.retrain import retrain; "
        f"out = retrain(config={str(config)!r}, **{kwargs!r}); "
        "print('RESULT ' + json.dumps(out))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp, env=_env(tmp), capture_output=True, text=True,
        timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-6000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


@pytest.fixture(scope="module")
def two_runs(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    from rlsd.demo import build_demo_store

    tmp = tmp_path_factory.mktemp("retrain")
    store = tmp / "demo.sqlite"
    build_demo_store(store, sql_tasks=0, json_tasks=0)
    first = run_retrain(tmp, pipeline_config(tmp, tiny_model_dir, store), auto_approve=True)
    # the second gate demands a gain no model can show: rejected, the alias must not move
    # (a per-run override that tightens the policy: allowed, and recorded)
    strict = pipeline_config(
        tmp, tiny_model_dir, store, promotion_overrides={"min_gain_over_control": 0.5},
    )  # fmt: skip
    second = run_retrain(tmp, strict, auto_approve=True)
    # the third passes its gate under a policy that needs a human, and nobody answers: the
    # pause times out, which rejects
    human = write_policy(tmp, required=True, approvers=["reviewer@example.com"])
    third = run_retrain(
        tmp, pipeline_config(tmp, tiny_model_dir, store, promotion_policy=str(human)),
        auto_approve=False, approval_timeout_s=3,
    )  # fmt: skip
    return {"tmp": tmp, "first": first, "second": second, "third": third}


def _client(tmp: Path):
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp / 'mlflow.db'}")
    return mlflow.MlflowClient()


def test_first_run_promotes_with_an_auto_approval_recorded_as_such(two_runs: dict) -> None:
    first, tmp = two_runs["first"], two_runs["tmp"]
    assert first["gate_passed"] and first["outcome"] == "promote"
    assert first["approval"]["mode"] == "auto" and first["approval"]["approver"] == "auto-approve"
    assert set(first["comparison"]) == {"base", "rlsd", "grpo"}
    client = _client(tmp)
    champ = client.get_model_version_by_alias("rlsd-policy", "champion")
    assert str(champ.version) == first["version"] == "1"
    tags = champ.tags
    assert tags["rlsd.approval.mode"] == "auto" and tags["rlsd.gate.outcome"] == "promote"
    assert tags["rlsd.gate.decision"] == "passed" and len(tags["rlsd.gate.decision_digest"]) == 64
    assert tags["rlsd.pipeline_run_id"] == first["mlflow_run_id"]
    # the version's source is the logged model (transformers flavor, llm/v1/chat) of the
    # winner's training run, which MLflow loads as a chat model
    import mlflow

    from rlsd.tracking.logged_model import version_model_id
    from rlsd.tracking.registry import download_version

    model_id = version_model_id(champ)
    assert model_id and champ.source == f"models:/{model_id}"
    assert client.get_logged_model(model_id).source_run_id == tags["rlsd.train_run_id"]
    chat = mlflow.pyfunc.load_model("models:/rlsd-policy@champion").predict(
        {"messages": [{"role": "user", "content": "What is 2 + 3?"}], "max_tokens": 4}
    )
    assert chat[0]["object"] == "chat.completion"
    # and its Hugging Face folder is what the next run's champion evaluation reads
    local = Path(download_version(champ, tmp / "dl"))
    assert (local / "model.safetensors").exists() and (local / "config.json").exists()


def test_stage_runs_hold_every_artifact_the_lineage_needs(two_runs: dict) -> None:
    first, tmp = two_runs["first"], two_runs["tmp"]
    client = _client(tmp)
    parent = client.get_run(first["mlflow_run_id"])
    assert parent.data.tags["rlsd.kind"] == "pipeline"
    assert parent.data.tags["prefect.flow_run_id"] == first["flow_run_id"]
    assert parent.data.tags["rlsd.git_sha"] not in ("", "unknown")
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`rlsd.pipeline_run_id` = '{first['mlflow_run_id']}'",
    )
    stages = sorted((r.data.tags["rlsd.stage"], r.data.tags.get("rlsd.arm", "")) for r in children)
    assert stages == sorted([
        ("verifier_inventory", ""), ("ingest_context", ""), ("train", "rlsd"), ("train", "grpo"),
        ("evaluate", "base"), ("evaluate", "rlsd"), ("evaluate", "grpo"), ("promotion_gate", ""),
    ])  # fmt: skip
    by = {(r.data.tags["rlsd.stage"], r.data.tags.get("rlsd.arm", "")): r for r in children}
    # every nested run points back at the Prefect flow run
    assert {r.data.tags["prefect.flow_run_id"] for r in children} == {first["flow_run_id"]}
    train = by[("train", "rlsd")]
    history = client.get_metric_history(train.info.run_id, "reward/mean")
    assert [m.step for m in history] == [1, 2]  # per-step metrics, batched
    names = {a.path for a in client.list_artifacts(train.info.run_id, "credit")}
    assert "credit/token_credit.html" in names
    ingest = by[("ingest_context", "")]
    digest = ingest.data.tags["rlsd.dataset_digest"]
    (inp,) = ingest.inputs.dataset_inputs
    assert digest.removeprefix("sha256:").startswith(inp.dataset.digest)
    # privileged text never reaches MLflow (the policy says so): only its digests
    art = Path(client.download_artifacts(ingest.info.run_id, "dataset", str(tmp / "ds")))
    assert not list(art.rglob("privileged.jsonl"))
    plots = {a.path for a in client.list_artifacts(first["mlflow_run_id"], "plots")}
    assert "plots/training_curves.png" in plots


def test_second_run_evaluates_the_champion_and_its_rejection_keeps_the_alias(
    two_runs: dict,
) -> None:
    second, tmp = two_runs["second"], two_runs["tmp"]
    assert "champion" in second["comparison"]
    assert not second["gate_passed"] and second["outcome"] == "reject"
    assert second["approval"] is None  # a failed gate never asks a human
    client = _client(tmp)
    assert str(client.get_model_version_by_alias("rlsd-policy", "champion").version) == "1"
    v2 = client.get_model_version("rlsd-policy", second["version"])
    assert v2.tags["rlsd.gate.decision"] == "failed" and v2.tags["rlsd.gate.outcome"] == "reject"
    assert "gain_over_control" in second["decision_markdown"]


def test_an_unanswered_approval_times_out_and_rejects(two_runs: dict) -> None:
    third, tmp = two_runs["third"], two_runs["tmp"]
    assert third["gate_passed"] and third["outcome"] == "reject"
    assert third["approval"]["mode"] == "timeout" and third["approval"]["decision"] == "reject"
    client = _client(tmp)
    assert str(client.get_model_version_by_alias("rlsd-policy", "champion").version) == "1"
    tags = client.get_model_version("rlsd-policy", third["version"]).tags
    assert tags["rlsd.approval.mode"] == "timeout" and tags["rlsd.gate.outcome"] == "reject"


def test_lineage_reads_the_whole_chain_from_mlflow(two_runs: dict) -> None:
    tmp = two_runs["tmp"]
    proc = subprocess.run(
        [sys.executable, "-m", "rlsd.cli", "lineage", "rlsd-policy@champion",
         "--out", str(tmp / "lineage" / "champion.md"), "--policy", str(tmp / "policy-0.yaml")],
        cwd=tmp, env={**_env(tmp), "COLUMNS": "200"}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = (tmp / "lineage" / "champion.md").read_text()
    first = two_runs["first"]
    assert "VERIFIED rlsd-policy version 1" in " ".join(proc.stdout.split())
    for needle in (
        "Verification: **VERIFIED**",
        "decision signature",
        "approval signature",
        "Lineage of `rlsd-policy` version 1",
        "champion",
        first["mlflow_run_id"],
        first["flow_run_id"],  # both ids, pointing at each other
        "demo-arithmetic",
        "sqlite:///${RLSD_DEMO_STORE}",  # data sources (no secrets)
        "Validation (Great Expectations)",
        "math-answer",
        "spec sha256",  # verifiers and digests
        "code version (git)",
        "rlsd",  # training config, code version
        "Evaluation (held-out",
        "base",
        "grpo",  # metrics and the control comparison
        "gain_over_control",
        "PASS",  # the gate decision
        "auto-approve",
        "promote",  # the approval and the outcome
    ):
        assert needle in text, needle
    snapshot_digest = json.loads(
        next((tmp / "snapshots").glob("demo-sources-*/manifest.json")).read_text()
    )["digest"]
    assert snapshot_digest in text
    html = (tmp / "lineage" / "champion.html").read_text()
    assert "<table>" in html and "gain_over_control" in html


def _lineage(tmp: Path, ref: str, policy: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rlsd.cli", "lineage", ref, "--policy", str(policy)],
        cwd=tmp, env={**_env(tmp), "COLUMNS": "250"}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_auto_approve_is_refused_before_training_where_the_policy_requires_a_human(
    two_runs: dict, tiny_model_dir: Path
) -> None:
    tmp = two_runs["tmp"]
    human = write_policy(tmp, required=True, approvers=["reviewer@example.com"])
    config = pipeline_config(tmp, tiny_model_dir, tmp / "demo.sqlite", promotion_policy=str(human))
    proc = subprocess.run(
        [sys.executable, "-m", "rlsd.cli", "retrain", "-c", str(config), "--auto-approve"],
        cwd=tmp, env=_env(tmp), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    out = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode == 2, out[-3000:]
    assert "approval.required is true, so --auto-approve is refused" in out
    assert "Traceback" not in out
    client = _client(tmp)
    # no run was trained or registered for it
    assert len(client.search_model_versions("name='rlsd-policy'")) == 3


def test_a_forged_promotion_is_seen_as_tampered(two_runs: dict) -> None:
    """The red team's forgery: move @champion to the version whose gate failed, rewrite its
    tags, re-log decision.md and approval.json. Lineage recomputes and says TAMPERED."""
    tmp, second = two_runs["tmp"], two_runs["second"]
    client = _client(tmp)
    v2 = client.get_model_version("rlsd-policy", second["version"])
    gate_run = v2.tags["rlsd.gate.run_id"]
    decision = json.loads(Path(client.download_artifacts(gate_run, "gate/decision.json",
                                                         str(tmp / "forge"))).read_text())  # fmt: skip
    assert decision["passed"] is False
    client.set_registered_model_alias("rlsd-policy", "champion", second["version"])
    try:
        forged_tags = {"rlsd.gate.decision": "passed", "rlsd.gate.outcome": "promote",
                       "rlsd.approval.decision": "approve", "rlsd.approval.mode": "human",
                       "rlsd.approval.approver": "reviewer@example.com"}  # fmt: skip
        for k, v in forged_tags.items():
            client.set_model_version_tag("rlsd-policy", second["version"], k, v)
        client.log_text(gate_run, "## Promotion gate: **PASSED**\n", "gate/decision.md")
        from rlsd.gate import GateDecision

        digest = GateDecision.model_validate(decision).digest()
        client.log_text(gate_run, json.dumps({
            "decision": "approve", "approver": "reviewer@example.com", "reason": "looks good",
            "at": "2099-01-01T00:00:00+00:00", "mode": "human", "gate_decision_digest": digest,
        }), "gate/approval.json")  # fmt: skip
        proc = _lineage(tmp, "rlsd-policy@champion", tmp / "policy-0.yaml")
        out = " ".join(proc.stdout.split())
        assert proc.returncode == 1, out[-3000:]
        assert f"TAMPERED rlsd-policy version {second['version']}" in out
        for failing in ("decision tag", "approval signature: no signature logged",
                        "champion alias", "outcome tag"):  # fmt: skip
            assert failing in out, failing
        # the gate section shows the signed decision.json, not the re-logged decision.md
        assert "Promotion gate: FAILED" in out and "Promotion gate: PASSED" not in out
    finally:
        client.set_registered_model_alias("rlsd-policy", "champion", "1")
    assert _lineage(tmp, "rlsd-policy@champion", tmp / "policy-0.yaml").returncode == 0
