"""The candidate as an MLflow model: logged with the transformers flavor (``llm/v1/chat``) in
its training run, linked to the run's dataset, registered from the logged model and promoted
the way the product does. Then MLflow's own tools load it (``mlflow.pyfunc.load_model``) and
serve it (``mlflow models serve``), rlsd's evaluation reads it back, lineage names it. A
version registered the old way (a plain ``model/`` folder) still shows, labelled as legacy; a
vision-language policy goes in as a pyfunc. Real MLflow on SQLite in a temporary folder."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rlsd.tracking import conventions as C
from tests.gate import factory

NAME = "rlsd-policy-test"
DIGEST = "sha256:" + "ab12" * 16
REQUEST = {"messages": [{"role": "user", "content": "What is 2 + 3?"}], "max_tokens": 6}


@dataclass
class Store:
    tmp: Path
    uri: str
    experiment_id: str
    client: Any


@dataclass
class Candidate:
    version: Any
    pipeline_run_id: str
    train_run_id: str
    gate_run_id: str


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):
    import mlflow
    from mlflow import MlflowClient

    tmp = tmp_path_factory.mktemp("logged-model")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        mp.setenv("DO_NOT_TRACK", "1")
        mlflow.set_tracking_uri(uri)
        client = MlflowClient()
        exp = client.create_experiment("rlsd", artifact_location=(tmp / "artifacts").as_uri())
        yield Store(tmp, uri, exp, client)
        mlflow.set_tracking_uri(previous)


def _dataset(tmp: Path) -> Any:
    """The training dataset input, shaped as ``records.dataset_entity`` makes it."""
    import mlflow
    import pandas as pd

    frame = pd.DataFrame({"id": ["t1", "t2"], "split": ["train", "heldout"]})
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The specified dataset source can be interpreted")
        return mlflow.data.from_pandas(
            frame, source=str(tmp), name="demo-sources-test", digest=DIGEST[7:39]
        )


def register_from_pipeline(store: Store, model_dir: Path, name: str) -> Candidate:
    """A pipeline run with a training arm (its dataset input and summary metrics logged) and a
    gate stage that registers the candidate: what ``record_gate`` does, on real runs."""
    import mlflow

    from rlsd.tracking.records import heldout_metrics
    from rlsd.tracking.registry import register_candidate
    from rlsd.tracking.runs import stage_run

    with mlflow.start_run(experiment_id=store.experiment_id, run_name="pipeline",
                          tags={C.KIND: "pipeline"}) as parent:  # fmt: skip
        pid = parent.info.run_id
        with stage_run(pid, "train", arm="rlsd", tags={C.DATASET_DIGEST: DIGEST}) as train:
            mlflow.log_input(_dataset(store.tmp), context="training")
            mlflow.log_metrics({"summary.train_reward_last": 0.5})
        with stage_run(pid, "promotion_gate") as gate:
            mv = register_candidate(name, pid, "rlsd", train.info.run_id, str(model_dir),
                                    DIGEST, heldout_metrics(factory.evidence()))  # fmt: skip
    return Candidate(mv, pid, train.info.run_id, gate.info.run_id)


def promote_as_the_product_does(name: str, c: Candidate) -> None:
    """``registry.promote`` after a passed gate and an approval: it moves ``champion``."""
    from rlsd.gate import ApprovalRecord, evaluate_gate
    from rlsd.gate.evidence import GateOutcome
    from rlsd.tracking.registry import promote

    decision = evaluate_gate(factory.policy(), factory.evidence(), now=factory.NOW)
    gate = GateOutcome(decision_json=decision.to_json(), passed=True, markdown="",
                       run_id=c.gate_run_id, version=str(c.version.version),
                       champion_version=None)  # fmt: skip
    approval = ApprovalRecord(decision="approve", approver="ada@example.com", reason="reviewed",
                              at=factory.NOW, mode="human",
                              gate_decision_digest=decision.digest())  # fmt: skip
    assert promote(name, gate, approval) == "promote"


@pytest.fixture(scope="module")
def champion(store: Store, tiny_model_dir: Path) -> Candidate:
    c = register_from_pipeline(store, tiny_model_dir, NAME)
    promote_as_the_product_does(NAME, c)
    return c


def _mlmodel(store: Store, model_id: str) -> dict:
    import yaml

    lm = store.client.get_logged_model(model_id)
    return yaml.safe_load(
        (Path(lm.artifact_location.removeprefix("file://")) / "MLmodel").read_text()
    )


def _check_chat_completion(answer: Any, max_tokens: int) -> str:
    assert isinstance(answer, list) and len(answer) == 1, answer
    (doc,) = answer
    assert doc["object"] == "chat.completion"
    (choice,) = doc["choices"]
    assert choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str)
    assert choice["finish_reason"] in ("stop", "length")
    assert 0 < doc["usage"]["completion_tokens"] <= max_tokens
    assert doc["usage"]["prompt_tokens"] > 5  # the chat template's turn markers and the question
    return choice["message"]["content"]


def test_candidate_is_a_transformers_chat_model_logged_in_its_training_run(
    store: Store, champion: Candidate
) -> None:
    from mlflow.entities import LoggedModelStatus

    from rlsd.tracking.logged_model import version_model_id

    client, mv = store.client, champion.version
    model_id = version_model_id(mv)
    assert model_id and mv.source == f"models:/{model_id}"  # the version's source: the model
    assert mv.run_id == champion.train_run_id
    assert (
        mv.tags[C.GATE_DECISION] == "pending"
        and mv.tags[C.PIPELINE_RUN] == champion.pipeline_run_id
    )
    lm = client.get_logged_model(model_id)
    assert lm.source_run_id == champion.train_run_id and lm.experiment_id == store.experiment_id
    assert lm.name == C.MODEL_DIR and lm.status == LoggedModelStatus.READY
    assert lm.tags[C.CANDIDATE_ARM] == "rlsd" and lm.tags[C.DATASET_DIGEST] == DIGEST
    assert json.loads(lm.tags["mlflow.modelVersions"]) == [{"name": NAME, "version": "1"}]
    # a model output of the training run, and runs:/<train run>/model resolves to it
    train = client.get_run(champion.train_run_id)
    assert [o.model_id for o in train.outputs.model_outputs] == [model_id]
    # the held-out scores the gate judged, linked to the run's training dataset
    linked = {m.key: m for m in lm.metrics if m.dataset_name}
    assert set(linked) == {"heldout_accuracy", "heldout_accuracy.arithmetic",
                           "heldout_accuracy.gsm8k", "heldout_accuracy.humaneval"}  # fmt: skip
    assert {(m.dataset_name, m.dataset_digest) for m in linked.values()} == {
        ("demo-sources-test", DIGEST[7:39])
    }
    doc = _mlmodel(store, model_id)
    tf = doc["flavors"]["transformers"]
    assert tf["inference_task"] == "llm/v1/chat" and tf["task"] == "text-generation"
    assert doc["flavors"]["python_function"]["config"] == {"max_new_tokens": 256}
    inputs = json.loads(doc["signature"]["inputs"])
    assert {i["name"] for i in inputs} >= {"messages", "max_tokens", "temperature"}
    art = Path(lm.artifact_location.removeprefix("file://"))
    example = json.loads((art / "input_example.json").read_text())
    assert example["messages"][0]["role"] == "user"
    reqs = (art / "requirements.txt").read_text().splitlines()
    assert any(r.startswith("mlflow==") for r in reqs) and any(
        r.startswith("torch==") for r in reqs
    )
    assert (
        art / "components" / "tokenizer" / "chat_template.jinja"
    ).exists() or "chat_template" in (
        art / "components" / "tokenizer" / "tokenizer_config.json"
    ).read_text()


def test_champion_loads_with_pyfunc_and_completes_a_chat(store: Store, champion: Candidate) -> None:
    import mlflow

    model = mlflow.pyfunc.load_model(f"models:/{NAME}@{C.CHAMPION}")
    _check_chat_completion(model.predict(REQUEST), REQUEST["max_tokens"])


def test_champion_serves_chat_completions_with_mlflow_models_serve(
    store: Store, champion: Candidate
) -> None:
    from tests.helpers.servers import ModelServer, http_get

    server = ModelServer(f"models:/{NAME}@{C.CHAMPION}", store.uri, store.tmp / "serve.log")
    with server:
        status, answer = server.invoke(REQUEST)
        assert status == 200, answer
        _check_chat_completion(answer, REQUEST["max_tokens"])
        url = server.base_url
    assert not server.running
    assert http_get(f"{url}/ping", timeout=2)[0] == 0  # nothing listens any more
    assert "Application shutdown complete" in server.log_tail(200)  # uvicorn stopped cleanly


def test_champion_downloads_as_the_folder_evaluation_reads(
    store: Store, champion: Candidate
) -> None:
    from rlsd.models import load_policy
    from rlsd.tracking.registry import champion_version, download_version

    champ = champion_version(NAME)
    assert str(champ.version) == str(champion.version.version)
    path = Path(download_version(champ, store.tmp / "champion"))
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= {
        p.name for p in path.iterdir()
    }
    policy = load_policy(str(path))
    assert policy.tokenizer.chat_template and policy.model.config.vocab_size > 0


def test_lineage_names_the_logged_model(store: Store, champion: Candidate) -> None:
    from rlsd.tracking.lineage import Trust, collect_lineage, render_markdown
    from rlsd.tracking.logged_model import KIND_LOGGED, version_model_id

    lin = collect_lineage(f"{NAME}@{C.CHAMPION}", Trust(None, None, "test"))
    model_id = version_model_id(champion.version)
    assert lin.model is not None and lin.model.kind == KIND_LOGGED
    assert lin.model.model_id == model_id and lin.model.model_uri == f"models:/{model_id}"
    assert lin.model.flavor == "transformers (llm/v1/chat)" and lin.model.pyfunc
    text = render_markdown(lin)
    assert f"logged model `{model_id}` (`models:/{model_id}`)" in text
    assert f'mlflow.pyfunc.load_model("models:/{NAME}/1")' in text
    assert f"mlflow models serve -m models:/{NAME}/1" in text
    assert "heldout_accuracy 0.667 on dataset `demo-sources-test`" in text
    assert "legacy" not in text


def test_a_legacy_artifact_folder_version_shows_in_lineage_and_still_evaluates(
    store: Store, tiny_model_dir: Path
) -> None:
    """Registered the old way (the weights as a run's ``model/`` folder): lineage says what it
    is, pyfunc indeed cannot load it, and the champion download still gives its folder."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from rlsd.tracking.lineage import Trust, collect_lineage, render_markdown
    from rlsd.tracking.logged_model import KIND_LEGACY, LEGACY_NOTE
    from rlsd.tracking.registry import champion_version, download_version
    from rlsd.tracking.runs import stage_run

    client, name = store.client, "rlsd-legacy-test"
    with mlflow.start_run(experiment_id=store.experiment_id, run_name="pipeline",
                          tags={C.KIND: "pipeline"}) as parent:  # fmt: skip
        pid = parent.info.run_id
        with stage_run(pid, "train", arm="grpo") as train:
            rid = train.info.run_id
    # exactly what register_candidate did before
    client.log_artifacts(rid, str(tiny_model_dir), C.MODEL_DIR)
    client.create_registered_model(name)
    mv = client.create_model_version(
        name, f"{client.get_run(rid).info.artifact_uri}/{C.MODEL_DIR}", run_id=rid,
        tags={C.PIPELINE_RUN: pid, C.TRAIN_RUN: rid, C.CANDIDATE_ARM: "grpo",
              C.DATASET_DIGEST: DIGEST, C.GATE_DECISION: "pending"},
    )  # fmt: skip
    client.set_registered_model_alias(name, C.CHAMPION, mv.version)

    lin = collect_lineage(f"{name}@{C.CHAMPION}", Trust(None, None, "test"))
    assert lin.model is not None and lin.model.kind == KIND_LEGACY and lin.model.legacy
    assert lin.model.model_id is None and not lin.model.pyfunc
    text = render_markdown(lin)
    assert LEGACY_NOTE in text and "legacy artifact-folder version" in text
    assert f"{rid}/artifacts/{C.MODEL_DIR}" in text  # where its files are
    with pytest.raises(MlflowException):  # the label is right: MLflow cannot load it
        mlflow.pyfunc.load_model(f"models:/{name}@{C.CHAMPION}")
    path = Path(download_version(champion_version(name), store.tmp / "legacy-champion"))
    assert (path / "config.json").exists() and (path / "model.safetensors").exists()


def test_a_vision_language_policy_is_logged_as_a_pyfunc_chat_model(
    store: Store, tmp_path_factory: pytest.TempPathFactory
) -> None:
    import mlflow

    from rlsd.tracking.logged_model import version_model_id, vision_chat_example
    from rlsd.tracking.registry import download_version
    from tests.helpers.tiny_vlm import tiny_vlm_dir

    name = "rlsd-vlm-test"
    c = register_from_pipeline(store, tiny_vlm_dir(tmp_path_factory, "idefics3"), name)
    model_id = version_model_id(c.version)
    assert c.version.source == f"models:/{model_id}"
    assert store.client.get_logged_model(model_id).source_run_id == c.train_run_id
    doc = _mlmodel(store, model_id)
    assert "transformers" not in doc["flavors"]
    assert Path(doc["flavors"]["python_function"]["model_code_path"]).name == "vlm_pyfunc.py"
    model = mlflow.pyfunc.load_model(f"models:/{name}/{c.version.version}")
    with_image = vision_chat_example(max_tokens=4)
    _check_chat_completion(model.predict(with_image), 4)
    text_only = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
    plain = model.predict(text_only)
    _check_chat_completion(plain, 3)
    # the image reached the model: its tiles are prompt tokens
    assert (
        model.predict(with_image)[0]["usage"]["prompt_tokens"]
        > plain[0]["usage"]["prompt_tokens"] + 8
    )
    path = Path(download_version(c.version, store.tmp / "vlm"))
    assert {"config.json", "model.safetensors", "processor_config.json"} <= {
        p.name for p in path.iterdir()
    }
