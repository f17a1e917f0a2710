"""Loading a policy model and tokenizer: the bundled SmolLM2 GGUF, a local directory or a hub id."""

from rlsd.models.bundled import BUNDLED_NAME, locate_gguf
from rlsd.models.config import LoraSettings, ModelConfig
from rlsd.models.loader import LoadedPolicy, bundled_model_dir, load_tokenizer
from rlsd.models.policy import load_policy

__all__ = [
    "BUNDLED_NAME",
    "LoadedPolicy",
    "LoraSettings",
    "ModelConfig",
    "bundled_model_dir",
    "load_policy",
    "load_tokenizer",
    "locate_gguf",
]
