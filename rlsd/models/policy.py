"""``load_policy``: the one entry point that loads a text or a vision-language policy.

It sits above both loaders (``rlsd.models.loader`` for causal LMs, ``rlsd.models.vlm`` for the
vision-language families), so neither needs to know the other exists.
"""

from __future__ import annotations

from rlsd.models.config import ModelConfig
from rlsd.models.loader import LoadedPolicy, load_text_policy
from rlsd.models.vlm import is_vision_language, load_vlm


def load_policy(cfg: ModelConfig | str | None = None) -> LoadedPolicy:
    """Load the policy named by ``cfg`` (see ModelConfig.name_or_path): a ``LoadedVLM`` when its
    config names a supported vision-language family, else a text ``LoadedPolicy``."""
    if cfg is None:
        cfg = ModelConfig()
    elif isinstance(cfg, str):
        cfg = ModelConfig(name_or_path=cfg)
    if is_vision_language(cfg.name_or_path):
        return load_vlm(cfg)
    return load_text_policy(cfg)
