"""Generation engines behind one interface: transformers generate (default) and vLLM (GPU)."""

from rlsd.rollout.base import RolloutBatch, RolloutEngine, SamplingSettings, derive_seed
from rlsd.rollout.hf_generate import HFGenerateEngine

__all__ = ["HFGenerateEngine", "RolloutBatch", "RolloutEngine", "SamplingSettings", "derive_seed"]
