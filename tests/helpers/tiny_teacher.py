"""Second tiny models for the OPD tests: a teacher that shares the tiny policy's tokenizer but not
its weights, and one whose tokenizer differs (which the trainer must refuse)."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from rlsd.models.loader import load_tokenizer
from rlsd.models.tiny import make_tiny_model


def make_tiny_teacher(out_dir: Path) -> Path:
    """A wider tiny Llama (hidden 96, seed 1) with the bundled tokenizer: a separate teacher."""
    return make_tiny_model(out_dir, hidden_size=96, num_layers=2, num_heads=4, seed=1)


def make_tiny_model_other_tokenizer(out_dir: Path, like: Path) -> Path:
    """A tiny Llama whose tokenizer is ``like``'s plus one added token (so the vocabularies
    differ by one entry, as after a fine-tune that added a special token)."""
    out = Path(out_dir)
    if (out / "config.json").exists():
        return out
    tok = load_tokenizer(like)
    tok.add_tokens(["<teacher_only_token>"])
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(2)
    LlamaForCausalLM(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out
