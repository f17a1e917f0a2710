"""Tiny random vision-language models for tests, and the shared fixture pieces of the VLM tests.

``make_tiny_vlm`` writes a tiny random model + processor of any supported family (the bundled
SmolLM2 tokenizer with the family's special tokens), loadable with ``rlsd.models.vlm.load_vlm``.
``benchmarks/gpu_vlm_step.py`` takes such a folder (``--model-dir``); build one with
``python -c 'from tests.helpers.tiny_vlm import make_tiny_vlm; make_tiny_vlm("qwen2_vl", DIR)'``
from the repository root.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw
from transformers import PretrainedConfig, PreTrainedTokenizerBase, ProcessorMixin

from rlsd.models.config import ModelConfig
from rlsd.models.loader import bundled_model_dir, load_tokenizer
from rlsd.models.vlm import (
    FAMILIES,
    IDEFICS_FAMILIES,
    PROCESSOR_CLASSES,
    QWEN_FAMILIES,
    LoadedVLM,
    image_only_processor_class,
    load_vlm,
)

# SmolVLMProcessor refuses to build without num2words (used for video frame captions).
FAMILY_PARAMS = [
    pytest.param(
        f,
        marks=pytest.mark.skipif(
            f == "smolvlm" and importlib.util.find_spec("num2words") is None,
            reason="SmolVLMProcessor needs the num2words package (pip install num2words)",
        ),
    )
    for f in FAMILIES
]


def shapes_image(width: int, height: int, n: int, seed: int) -> Image.Image:
    """A deterministic picture of ``n`` coloured rectangles."""
    g = torch.Generator().manual_seed(seed)
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    for _ in range(n):
        x, y = (int(v) for v in torch.randint(0, max(width, height) // 2, (2,), generator=g))
        colour = tuple(int(c) for c in torch.randint(0, 255, (3,), generator=g))
        draw.rectangle([x, y, x + width // 4, y + height // 4], fill=colour)
    return img


def tiny_vlm_dir(tmp_path_factory: pytest.TempPathFactory, family: str) -> Path:
    """The session's tiny ``family`` model, built once and shared by every test module."""
    return make_tiny_vlm(family, tmp_path_factory.getbasetemp() / "tiny-vlm" / family)


# Imported by the test modules that use it, not by tests/conftest.py: importing this module costs
# the vision-language imports, which the rest of the suite does not need.
@pytest.fixture(scope="module", params=FAMILY_PARAMS)
def vlm(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> LoadedVLM:
    """A tiny random vision-language policy of each supported family, loaded once per module."""
    return load_vlm(ModelConfig(name_or_path=str(tiny_vlm_dir(tmp_path_factory, request.param))))


_QWEN_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Qwen3-VL: no default system turn; images rendered as in Qwen2-VL.
_QWEN3_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Idefics3 / SmolVLM ("User:<image>question<end_of_utterance>\nAssistant:"), string content too.
_IDEFICS_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'] is string %}{{ ': ' + message['content'] }}"
    "{% else %}{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}"
    "{% endif %}{% for line in message['content'] %}"
    "{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}"
    "{% endfor %}{% endif %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

_QWEN_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
_IDEFICS_TOKENS = ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>"] + [
    f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)
]

_TEXT = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 4096,
}


def _tiny_config(family: str, tok: PreTrainedTokenizerBase) -> PretrainedConfig:
    from transformers import (
        Idefics3Config,
        Qwen2_5_VLConfig,
        Qwen2VLConfig,
        Qwen3VLConfig,
        SmolVLMConfig,
    )

    ids = {
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
    }
    text = {"vocab_size": len(tok), **_TEXT, **ids, "tie_word_embeddings": True}
    if family in QWEN_FAMILIES:
        qwen_ids = {
            "image_token_id": tok.convert_tokens_to_ids("<|image_pad|>"),
            "video_token_id": tok.convert_tokens_to_ids("<|video_pad|>"),
            "vision_start_token_id": tok.convert_tokens_to_ids("<|vision_start|>"),
            "vision_end_token_id": tok.convert_tokens_to_ids("<|vision_end|>"),
        }
        if family == "qwen2_vl":
            # head_dim 16 -> 8 rotary frequencies split (temporal, height, width) like 16/24/24.
            rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}
            vision = {
                "depth": 2,
                "embed_dim": 32,
                "hidden_size": 64,
                "num_heads": 2,
                "mlp_ratio": 2,
                "patch_size": 14,
                "spatial_merge_size": 2,
                "temporal_patch_size": 2,
            }
            return Qwen2VLConfig(
                text_config={**text, "rope_parameters": rope},
                vision_config=vision,
                tie_word_embeddings=True,
                **qwen_ids,
            )
        if family == "qwen2_5_vl":
            rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}
            vision = {
                "depth": 2,
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_heads": 2,
                "out_hidden_size": 64,
                "patch_size": 14,
                "spatial_merge_size": 2,
                "temporal_patch_size": 2,
                "window_size": 56,  # layer 0 windowed attention, layer 1 full
                "fullatt_block_indexes": [1],
            }
            return Qwen2_5_VLConfig(
                text_config={**text, "rope_parameters": rope},
                vision_config=vision,
                tie_word_embeddings=True,
                **qwen_ids,
            )
        # qwen3_vl: interleaved M-RoPE, deepstack features from vision layer 0 into LM layer 0.
        rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 2, 2]}
        vision = {
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": 64,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "num_position_embeddings": 16,
            "deepstack_visual_indexes": [0],
        }
        return Qwen3VLConfig(
            text_config={**text, "head_dim": 16, "rope_parameters": rope},
            vision_config=vision,
            tie_word_embeddings=True,
            **qwen_ids,
        )
    # smolvlm / idefics3: 32x32 tiles of 8x8 patches, pixel shuffle 2 -> 4 tokens per tile.
    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": 32,
        "patch_size": 8,
    }
    cls = SmolVLMConfig if family == "smolvlm" else Idefics3Config
    return cls(
        text_config={**text, "model_type": "llama"},
        vision_config=vision,
        scale_factor=2,
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id,
    )


def _tiny_processor(family: str, tok: PreTrainedTokenizerBase) -> ProcessorMixin:
    import transformers

    cls = image_only_processor_class(getattr(transformers, PROCESSOR_CLASSES[family]))
    if family in QWEN_FAMILIES:
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
            Qwen2VLImageProcessorPil,
        )

        patch = 16 if family == "qwen3_vl" else 14
        factor = patch * 2
        image_processor = Qwen2VLImageProcessorPil(
            size={"shortest_edge": (2 * factor) ** 2, "longest_edge": (4 * factor) ** 2},
            patch_size=patch,
            temporal_patch_size=2,
            merge_size=2,
        )
        template = _QWEN3_TEMPLATE if family == "qwen3_vl" else _QWEN_TEMPLATE
        return cls(image_processor=image_processor, tokenizer=tok, chat_template=template)
    if family == "smolvlm":
        from transformers.models.smolvlm.image_processing_pil_smolvlm import (
            SmolVLMImageProcessorPil as ImageProcessor,
        )
    else:
        from transformers.models.idefics3.image_processing_pil_idefics3 import (
            Idefics3ImageProcessorPil as ImageProcessor,
        )
    # An image is resized to at most 64 px a side and cut into 32 px tiles plus a global view.
    image_processor = ImageProcessor(
        size={"longest_edge": 64}, max_image_size={"longest_edge": 32}, do_image_splitting=True
    )
    return cls(
        image_processor=image_processor,
        tokenizer=tok,
        image_seq_len=4,
        chat_template=_IDEFICS_TEMPLATE,
    )


def make_tiny_vlm(
    family: str,
    out_dir: str | Path,
    seed: int = 0,
    cache_dir: str | Path | None = None,
) -> Path:
    """Write a tiny random ``family`` model + processor (bundled SmolLM2 tokenizer) to ``out_dir``.

    Text model: hidden 64, 2 layers, 4 heads (2 KV heads); vision tower: 2 layers, width 32.
    A 64x64 image is 4 tokens for Qwen2/2.5-VL and Qwen3-VL, and 5 tiles x 4 tokens (plus
    tile markers) for SmolVLM / Idefics3. Loads with ``load_vlm``. Returns ``out_dir``.
    """
    from transformers import AutoModelForImageTextToText as AutoVLM

    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; expected one of {', '.join(FAMILIES)}")
    out = Path(out_dir)
    if (out / "config.json").exists():
        return out
    src, _ = bundled_model_dir(Path(cache_dir) if cache_dir else None)
    tok = load_tokenizer(src)
    tokens = _QWEN_TOKENS if family in QWEN_FAMILIES else _IDEFICS_TOKENS
    tok.add_special_tokens({"additional_special_tokens": tokens})
    config = _tiny_config(family, tok)
    torch.manual_seed(seed)
    model = AutoVLM.from_config(config, dtype=torch.float32)
    eos = [tok.eos_token_id]
    if family in IDEFICS_FAMILIES:
        eos.insert(0, tok.convert_tokens_to_ids("<end_of_utterance>"))
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.bos_token_id = tok.bos_token_id
    processor = _tiny_processor(family, tok)
    # Written aside and renamed, so an interrupted build never leaves a half model behind.
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{out.name}-", dir=out.parent))
    try:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        if out.exists() and not any(out.iterdir()):
            out.rmdir()
        tmp.rename(out)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (out / "config.json").exists():  # not a concurrent build of the same model
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
