"""Settings of one retraining pipeline run (the ``retrain`` flow), validated by pydantic.

Defaults are the embedded ones: the demo sources over the SQLite demo store, the bundled model,
MLflow on SQLite, the repository's data and promotion policies. ``rlsd/configs/pipeline.yaml``
holds the demo budget; a team's own file replaces it (``rlsd retrain -c my-pipeline.yaml``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from rlsd.configs.loading import read_yaml_mapping, validate_model

DEFAULT_PIPELINE_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "pipeline.yaml"


class PipelineConfigError(ValueError):
    """The pipeline configuration is invalid; the message names the file, field and value."""


class PipelineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    experiment: str = Field("rlsd-retrain", description="MLflow experiment of the pipeline runs.")
    registered_model: str = Field("rlsd-policy", description="MLflow registered model name.")
    work_dir: str = Field("runs/pipeline", description="Local folder of the runs' files.")
    sources: str | None = Field(
        None, description="Sources YAML; None = the demo sources over `demo_store`."
    )
    demo_store: str = Field(
        "runs/demo-store.sqlite", description="Demo store (built when missing and sources=None)."
    )
    source_names: list[str] | None = Field(
        None, description="Ingest only these declared sources (None = all)."
    )
    data_policy: str | None = Field(
        None, description="policies/privileged_context.yaml unless given."
    )
    snapshots_dir: str = Field("runs/snapshots", description="Where ingestion writes snapshots.")
    promotion_policy: str | None = Field(None, description="policies/promotion.yaml unless given.")
    promotion_overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="Dotted overrides of the promotion policy (recorded); an override may only "
        "tighten the policy, or the gate's policy_as_deployed rule fails and the run cannot "
        "promote.",
    )
    promotion_policy_sha256: str | None = Field(
        None,
        pattern=r"^[0-9a-f]{64}$",
        description="The digest the deployment pins the promotion policy to (`rlsd policy "
        "digest`); a run whose policy file differs cannot promote. None: not pinned.",
    )
    signing_key_file: str = Field(
        "runs/keys/rlsd-signing.pem",
        description="Ed25519 private key (PEM) that signs the gate's records (`rlsd keys init`).",
    )
    signing_key_secret: str | None = Field(
        None,
        description="Name of a Prefect Secret block holding the PEM private key; used instead of "
        "signing_key_file when set.",
    )
    train_config: str | None = Field(None, description="Trainer YAML; None = embedded defaults.")
    train_overrides: dict[str, Any] = Field(
        default_factory=dict, description="Dotted trainer overrides applied to both arms."
    )
    domains: list[str] | None = Field(
        None, description="Snapshot domains to train and evaluate on (None = all)."
    )
    candidate: Literal["rlsd", "opsd"] = Field("rlsd", description="The arm under evaluation.")
    control: Literal["grpo"] = Field("grpo", description="The control arm.")
    eval_tasks: int = Field(64, ge=1, description="Held-out tasks evaluated per model.")
    verifiers_root: str | None = Field(None, description="verifiers/ unless given.")
    sandbox_backend: Literal["auto", "docker", "local"] = "auto"
    require_docker: bool = Field(
        False, description="Fail the inventory when no Docker engine answers."
    )
    approval_timeout_s: int | None = Field(
        None, ge=1, description="Seconds to wait for a human; None = the promotion policy's."
    )


def load_pipeline_config(
    path: Path | str | None = None, overrides: dict[str, Any] | None = None
) -> PipelineConfig:
    """The pipeline config of ``path`` (the embedded one unless given); ``overrides`` are
    top-level fields (None values ignored)."""
    where = Path(path) if path is not None else DEFAULT_PIPELINE_CONFIG

    def error(file: Path, detail: str) -> PipelineConfigError:
        return PipelineConfigError(f"{file}: {detail}")

    data = read_yaml_mapping(where, error=error)
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return validate_model(PipelineConfig, data, where, what="pipeline config", error=error)
