"""The candidate as an MLflow model that MLflow itself loads and serves, and the way back to its
Hugging Face folder.

A **text policy** is logged with MLflow's transformers flavor, task ``llm/v1/chat``: MLflow
sets the chat signature (OpenAI-style ``messages`` in, ``chat.completion`` answers out), the
prompt is the model's own chat template (it comes with the tokenizer), and
``mlflow.pyfunc.load_model`` / ``mlflow models serve`` work on it. A **vision-language policy**
goes in as a pyfunc (:mod:`rlsd.tracking.vlm_pyfunc`, models from code): the transformers
flavor adds no pyfunc to a model saved with a processor, so it could be neither loaded nor
served that way. The pyfunc takes the same requests and gives the same answers, with images as
``image_url`` parts holding ``data:`` URLs.

Either way the model is logged **in the candidate's training run** (the LoggedModel's source
run, a model output of that run, with the run's params) and tagged with the pipeline's ids. Its
held-out scores are logged as model metrics **linked to the run's training dataset**. In OSS
MLflow 3 that is how a LoggedModel links to a dataset: ``log_inputs(models=...)`` is
Databricks-only, and it records a model as a run's *input* anyway. Requirements are pinned from
the installed versions, never inferred: no network, no extra model load in a subprocess.

The way back, :func:`download_hf_model`: the Hugging Face folder (weights, tokenizer, processor)
of any registered version, a logged model or a *legacy* one (a plain ``model/`` artifact folder
of a run, the way versions were registered before). :func:`describe_version_model` tells which
one a version is (``rlsd lineage`` shows it).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from rlsd.tracking import conventions as C

#: the LoggedModel's name: ``runs:/<training run>/model`` resolves to it, as it did to the folder
LOGGED_MODEL_NAME = C.MODEL_DIR
CHAT_TASK = "llm/v1/chat"
#: the completion length when a request gives no ``max_tokens`` (a pipeline's default is 20
#: tokens *including* the prompt, which leaves nothing for the answer)
MAX_NEW_TOKENS = 256
VLM_PYFUNC_FILE = Path(__file__).with_name("vlm_pyfunc.py")

KIND_LOGGED = "logged-model"
KIND_MLFLOW_FOLDER = "mlflow-model-folder"
KIND_LEGACY = "legacy-artifact-folder"
LEGACY_NOTE = (
    "**legacy artifact-folder version**: plain Hugging Face files, no MLmodel (registered "
    "before candidates were logged as MLflow models); `mlflow.pyfunc.load_model` and "
    "`mlflow models serve` cannot load it, rlsd's own evaluation still reads it"
)

_TEXT_PACKAGES = ("mlflow", "transformers", "torch", "accelerate", "safetensors", "tokenizers")
_VLM_PACKAGES = (*_TEXT_PACKAGES, "pillow", "num2words")
# 1x1 white PNG: the vision-language input example (and what a request's image part looks like)
_PIXEL_PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4//8/AAX+Av4N70a4AAAAAElFTkSuQmCC"
)


def chat_example(max_tokens: int = 16) -> dict[str, Any]:
    """A chat request (the logged input example; MLflow validates serving with it)."""
    return {
        "messages": [{"role": "user", "content": "What is 17 + 25? Answer with the number."}],
        "max_tokens": max_tokens,
    }


def vision_chat_example(max_tokens: int = 8) -> dict[str, Any]:
    """A chat request with one image part (``data:`` URL), the vision-language example."""
    return {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url",
                     "image_url": {"url": f"data:image/png;base64,{_PIXEL_PNG}"}},
                    {"type": "text", "text": "How many shapes are in the picture?"},
                ],
            }
        ],
        "max_tokens": max_tokens,
    }  # fmt: skip


def vision_chat_signature() -> Any:
    """The vision-language pyfunc's signature: chat ``messages`` whose ``content`` is a string
    or a list of ``text`` / ``image_url`` parts, ``max_tokens`` and ``temperature``; answers as
    ``llm/v1/chat``'s."""
    from mlflow.models import ModelSignature
    from mlflow.types.llm import CHAT_MODEL_OUTPUT_SCHEMA
    from mlflow.types.schema import AnyType, Array, ColSpec, DataType, Object, Property, Schema

    message = Object([Property("role", DataType.string), Property("content", AnyType())])
    inputs = Schema(
        [
            ColSpec(Array(message), "messages"),
            ColSpec(DataType.long, "max_tokens", required=False),
            ColSpec(DataType.double, "temperature", required=False),
        ]
    )
    return ModelSignature(inputs=inputs, outputs=CHAT_MODEL_OUTPUT_SCHEMA)


def pip_requirements(vision: bool = False) -> list[str]:
    """The serving environment, pinned to what is installed here (never inferred: MLflow's
    inference loads the model again in a subprocess and may reach for an index)."""
    out = []
    for name in _VLM_PACKAGES if vision else _TEXT_PACKAGES:
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        out.append(f"{name}=={version.split('+', 1)[0]}")  # 2.13.0+cpu -> 2.13.0
    return out


def log_policy_model(
    model_dir: str | Path,
    run_id: str,
    *,
    tags: dict[str, str] | None = None,
    description: str = "",
) -> Any:
    """Log the policy in ``model_dir`` (``save_pretrained`` output of model and tokenizer, or
    processor) as an MLflow model of the run ``run_id``; returns MLflow's ``ModelInfo``."""
    from rlsd.models.vlm import is_vision_language

    path = Path(model_dir).resolve()  # an absolute path is never mistaken for a hub repo id
    if not (path / "config.json").is_file() and not (path / "adapter_config.json").is_file():
        raise ValueError(f"{path}: no config.json, not a save_pretrained model folder")
    if is_vision_language(path):
        return _log_vision(path, run_id, tags or {})
    return _log_text(path, run_id, tags or {}, description)


def _new_logged_model(run_id: str, tags: dict[str, str]) -> str:
    """A PENDING LoggedModel *in the run's experiment*, with the run's params, as MLflow makes
    one: without an active run ``log_model(run_id=...)`` would put it in the default experiment.
    The flavor's ``log_model(model_id=...)`` fills and finalises it."""
    import mlflow
    from mlflow import MlflowClient

    run = MlflowClient().get_run(run_id)
    return mlflow.initialize_logged_model(
        name=LOGGED_MODEL_NAME,
        source_run_id=run_id,
        tags=tags,
        params=dict(run.data.params),
        experiment_id=run.info.experiment_id,
    ).model_id


def _model_card(description: str) -> Any:
    from huggingface_hub import ModelCard

    # given, so MLflow does not ask the hub for one (the folder is local, the machine offline)
    return ModelCard(
        "---\nlibrary_name: transformers\ntags: [rlsd]\n---\n"
        f"# rlsd policy\n\n{description or 'Retrained by the rlsd pipeline.'}\n"
    )


def _load_causal_lm(path: Path) -> Any:
    """The causal LM in ``path``; LoRA adapters (an adapter-only folder) merged into their base,
    so the logged model is whole."""
    from transformers import AutoModelForCausalLM

    if (path / "config.json").is_file():
        return AutoModelForCausalLM.from_pretrained(str(path))
    from peft import AutoPeftModelForCausalLM

    try:
        return AutoPeftModelForCausalLM.from_pretrained(str(path)).merge_and_unload()
    except (OSError, ValueError) as exc:
        base = json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path")
        raise ValueError(
            f"{path}: LoRA adapters whose base model {base!r} cannot be loaded here ({exc})"
        ) from exc


def _log_text(path: Path, run_id: str, tags: dict[str, str], description: str) -> Any:
    import mlflow
    import transformers

    model = _load_causal_lm(path)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(path))
    if not tokenizer.chat_template:
        raise ValueError(f"{path}: the tokenizer has no chat template; llm/v1/chat needs one")
    pipe = transformers.pipeline("text-generation", model=model, tokenizer=tokenizer)
    return mlflow.transformers.log_model(
        pipe,
        name=LOGGED_MODEL_NAME,
        task=CHAT_TASK,  # MLflow sets the chat signature from it
        input_example=chat_example(),
        model_card=_model_card(description),
        pip_requirements=pip_requirements(),
        model_config={"max_new_tokens": MAX_NEW_TOKENS},
        run_id=run_id,
        model_id=_new_logged_model(run_id, tags),
    )


def _bundle_models_package(dest: Path) -> Path:
    """``rlsd/__init__.py`` and ``rlsd/models/`` under ``dest``: the code the pyfunc needs
    (``rlsd.models`` imports nothing else of rlsd), shipped with the model so that it loads
    where rlsd is not installed."""
    import rlsd

    src = Path(rlsd.__file__).parent
    pkg = dest / "rlsd"
    (pkg / "models").mkdir(parents=True)
    shutil.copy2(src / "__init__.py", pkg / "__init__.py")
    for f in (src / "models").glob("*.py"):
        shutil.copy2(f, pkg / "models" / f.name)
    return pkg


def _log_vision(path: Path, run_id: str, tags: dict[str, str]) -> Any:
    import mlflow
    from mlflow.models import Model

    with tempfile.TemporaryDirectory() as tmp:
        code = _bundle_models_package(Path(tmp))
        # Model.log is what mlflow.pyfunc.log_model calls; it takes the run to log in
        return Model.log(
            artifact_path=None,
            name=LOGGED_MODEL_NAME,
            flavor=mlflow.pyfunc,
            python_model=str(VLM_PYFUNC_FILE),
            artifacts={"model": str(path)},
            code_paths=[str(code)],
            signature=vision_chat_signature(),
            input_example=vision_chat_example(),
            pip_requirements=pip_requirements(vision=True),
            model_config={"max_new_tokens": MAX_NEW_TOKENS},
            run_id=run_id,
            model_id=_new_logged_model(run_id, tags),
        )


def training_dataset(run: Any) -> tuple[str, str] | None:
    """``(name, digest)`` of the run's training dataset input (``mlflow.log_input``), if any."""
    for d in run.inputs.dataset_inputs if run.inputs else []:
        if any(t.key == "mlflow.data.context" and t.value == "training" for t in d.tags):
            return d.dataset.name, d.dataset.digest
    return None


def log_model_metrics(model_id: str, run: Any, metrics: dict[str, float]) -> None:
    """``metrics`` on the logged model, in ``run`` and linked to the run's training dataset."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    if not metrics:
        return
    name, digest = training_dataset(run) or (None, None)
    now = int(time.time() * 1000)
    batch = [
        Metric(k, float(v), now, 0, model_id=model_id, dataset_name=name, dataset_digest=digest)
        for k, v in metrics.items()
    ]
    MlflowClient().log_batch(run.info.run_id, metrics=batch)


def link_version(model_id: str, name: str, version: str) -> None:
    """The logged model's ``mlflow.modelVersions`` tag, as ``mlflow.register_model`` sets it
    (the UI links the model to its registry versions through it)."""
    from mlflow import MlflowClient
    from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

    client = MlflowClient()
    existing = client.get_logged_model(model_id).tags.get(MLFLOW_MODEL_VERSIONS)
    value = [*(json.loads(existing) if existing else []), {"name": name, "version": version}]
    client.set_logged_model_tags(model_id, {MLFLOW_MODEL_VERSIONS: json.dumps(value)})


# --------------------------------------------------------------------------- the way back


def version_model_id(version: Any) -> str | None:
    """The logged model behind a registry version (None for a legacy artifact-folder one)."""
    model_id = getattr(version, "model_id", None)
    if model_id:
        return str(model_id)
    source = str(version.source or "")
    if source.startswith("models:/m-") and "/" not in source.removeprefix("models:/"):
        return source.removeprefix("models:/")
    return None


def _read_mlmodel(artifact_uri: str) -> dict[str, Any] | None:
    """The MLmodel document under ``artifact_uri``, None where there is none."""
    import mlflow
    import yaml

    try:
        with tempfile.TemporaryDirectory() as tmp:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=f"{artifact_uri.rstrip('/')}/MLmodel", dst_path=tmp
            )
            return yaml.safe_load(Path(local).read_text(encoding="utf-8"))
    except Exception:  # noqa: BLE001 - not found, whatever the artifact store says
        return None


@dataclass
class VersionModel:
    """What a registry version points at, for lineage."""

    kind: str  # KIND_LOGGED | KIND_MLFLOW_FOLDER | KIND_LEGACY
    source: str
    model_id: str | None = None
    model_uri: str | None = None
    artifact_location: str | None = None
    source_run_id: str | None = None
    flavor: str | None = None  # "transformers (llm/v1/chat)", "pyfunc (...)"
    pyfunc: bool = False
    metrics: list[dict[str, Any]] = field(default_factory=list)

    @property
    def legacy(self) -> bool:
        return self.kind == KIND_LEGACY


def _flavor(mlmodel: dict[str, Any] | None) -> tuple[str | None, bool]:
    if not mlmodel:
        return None, False
    flavors = mlmodel.get("flavors") or {}
    pyfunc = "python_function" in flavors
    if "transformers" in flavors:
        tf = flavors["transformers"]
        task = tf.get("inference_task") or tf.get("task")
        return f"transformers ({task})", pyfunc
    if pyfunc:
        conf = flavors["python_function"]
        if conf.get("model_code_path"):  # models from code (the vision-language chat model)
            return f"pyfunc (models from code: {Path(conf['model_code_path']).name})", True
        return f"pyfunc ({conf.get('loader_module', '')})", True
    return ", ".join(flavors) or None, False


def describe_version_model(client: Any, version: Any) -> VersionModel:
    """Whether ``version`` is a logged MLflow model (and which), or a legacy artifact folder."""
    source = str(version.source or "")
    model_id = version_model_id(version)
    if model_id is not None:
        lm = client.get_logged_model(model_id)
        flavor, pyfunc = _flavor(_read_mlmodel(lm.artifact_location))
        metrics = [
            {"key": m.key, "value": m.value, "dataset_name": m.dataset_name,
             "dataset_digest": m.dataset_digest, "run_id": m.run_id}
            for m in (lm.metrics or [])
        ]  # fmt: skip
        return VersionModel(
            KIND_LOGGED, source, model_id, f"models:/{model_id}", lm.artifact_location,
            lm.source_run_id, flavor, pyfunc, metrics,
        )  # fmt: skip
    mlmodel = _read_mlmodel(source)
    if mlmodel is not None:  # an MLflow model folder inside a run (MLflow 2 style)
        flavor, pyfunc = _flavor(mlmodel)
        return VersionModel(KIND_MLFLOW_FOLDER, source, flavor=flavor, pyfunc=pyfunc,
                            source_run_id=version.run_id)  # fmt: skip
    return VersionModel(KIND_LEGACY, source, source_run_id=version.run_id)


def hf_model_dir(local: Path, out: Path) -> Path:
    """The Hugging Face folder inside a downloaded version: ``local`` itself for a legacy
    artifact folder; for a transformers-flavor model its weights and components gathered into
    ``out``; for the vision-language pyfunc its ``model`` artifact."""
    import yaml

    mlmodel = local / "MLmodel"
    if not mlmodel.is_file():
        if (local / "config.json").is_file() or (local / "adapter_config.json").is_file():
            return local
        raise FileNotFoundError(f"{local}: neither an MLflow model nor a Hugging Face folder")
    flavors = (yaml.safe_load(mlmodel.read_text(encoding="utf-8")) or {}).get("flavors") or {}
    if "transformers" in flavors:
        conf = flavors["transformers"]
        if not (local / conf.get("model_binary", "model")).is_dir():
            raise FileNotFoundError(f"{local}: logged without weights (save_pretrained=False)")
        parts = [local / conf.get("model_binary", "model")]
        parts += [local / "components" / c for c in conf.get("components", [])]
        parts.append(local / "components" / "processor")
        out.mkdir(parents=True, exist_ok=True)
        for part in parts:
            for f in sorted(part.iterdir()) if part.is_dir() else []:
                if not (out / f.name).exists():  # the weights' files first, then components'
                    shutil.move(str(f), str(out / f.name))
        return out
    artifacts = (flavors.get("python_function") or {}).get("artifacts") or {}
    if "model" in artifacts:
        return local / artifacts["model"]["path"]
    raise FileNotFoundError(f"{local}: an MLflow model without Hugging Face weights")


def download_hf_model(version: Any, dest: Path) -> str:
    """A registry version's Hugging Face folder in a fresh ``dest``; returns its path."""
    import mlflow

    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=version.source, dst_path=str(dest / "download")
    )
    return str(hf_model_dir(Path(local), dest / "hf"))
