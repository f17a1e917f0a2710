"""The torch dtype of each ``ModelConfig.dtype`` name (shared by the text and VLM loaders)."""

from __future__ import annotations

import torch

TORCH_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
