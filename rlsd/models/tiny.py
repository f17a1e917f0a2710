"""A tiny, randomly initialised model with the bundled tokenizer: for tests and smoke runs.

It runs every code path of the trainer in seconds; it learns nothing useful.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from rlsd.models.loader import bundled_model_dir, load_tokenizer


def make_tiny_model(
    out_dir: str | Path,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    seed: int = 0,
    cache_dir: str | Path | None = None,
) -> Path:
    """Write a tiny Llama (SmolLM2's tokenizer and chat template) to ``out_dir``; return it."""
    out = Path(out_dir)
    if (out / "config.json").exists():
        return out
    src, _ = bundled_model_dir(Path(cache_dir) if cache_dir else None)
    tok = load_tokenizer(src)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
