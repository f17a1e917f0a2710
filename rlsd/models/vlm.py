"""Vision-language policies: detection, processors, loading, and encoding prompts with images.

Five families are supported, chosen from the model's ``config.json`` (``model_type``):
``qwen2_vl``, ``qwen2_5_vl``, ``qwen3_vl`` (M-RoPE, patch-sequence ``pixel_values`` +
``image_grid_thw`` + ``mm_token_type_ids``) and ``smolvlm``, ``idefics3`` (1-D RoPE, per-image
``pixel_values`` + ``pixel_attention_mask``, images split into tiles with ``<row_r_col_c>`` markers).

Without torchvision (its PyPI wheels for torch 2.13 are CUDA builds that do not load against the
CPU torch) transformers 5 cannot build a video processor, so ``AutoProcessor`` fails for the four
processors that carry one. Such processors are then built *image-only*: the same official class,
minus its ``video_processor`` attribute, with the PIL image processor. Prompts with images work
exactly as with ``AutoProcessor``; videos are not supported in that mode.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import (
    AutoConfig,
    AutoModelForImageTextToText,
    AutoProcessor,
    PretrainedConfig,
    ProcessorMixin,
)
from transformers.utils import is_torchvision_available

from rlsd.models.bundled import BUNDLED_NAME
from rlsd.models.cache import default_cache_dir, dir_digest
from rlsd.models.config import ModelConfig
from rlsd.models.dtypes import TORCH_DTYPES
from rlsd.models.loader import LoadedPolicy, prepare_for_training

log = logging.getLogger("rlsd.models")

QWEN_FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
IDEFICS_FAMILIES = ("smolvlm", "idefics3")
FAMILIES = QWEN_FAMILIES + IDEFICS_FAMILIES

PROCESSOR_CLASSES = {
    "qwen2_vl": "Qwen2VLProcessor",
    "qwen2_5_vl": "Qwen2_5_VLProcessor",
    "qwen3_vl": "Qwen3VLProcessor",
    "smolvlm": "SmolVLMProcessor",
    "idefics3": "Idefics3Processor",
}


@dataclass
class LoadedVLM(LoadedPolicy):
    """A LoadedPolicy (model, tokenizer, source, path, digest) plus the processor and family.

    Being a LoadedPolicy, it goes wherever the trainer takes a text policy; ``processor`` turns
    (chat text, images) into model inputs (see ``encode_mm_prompt``).
    """

    processor: ProcessorMixin | None = None
    family: str = ""

    @property
    def image_token_id(self) -> int:
        return int(self.model.config.image_token_id)


# --------------------------------------------------------------------------- detection


def _model_type(config_or_path: Any) -> str | None:
    if isinstance(config_or_path, PretrainedConfig):
        return config_or_path.model_type
    if isinstance(config_or_path, dict):
        return config_or_path.get("model_type")
    if isinstance(config_or_path, ModelConfig):
        config_or_path = config_or_path.name_or_path
    name = str(config_or_path)
    if name == BUNDLED_NAME:
        return None
    path = Path(name).expanduser()
    if path.is_dir():
        cfg = path / "config.json"
        return json.loads(cfg.read_text()).get("model_type") if cfg.is_file() else None
    if path.is_file() and path.name.endswith(".json"):
        return json.loads(path.read_text()).get("model_type")
    try:  # a hub id already in the local hub cache; never a download
        return AutoConfig.from_pretrained(name, local_files_only=True).model_type
    except Exception:  # noqa: BLE001 - anything unresolvable is "not a VLM we know"
        return None


def vlm_family(config_or_path: Any) -> str | None:
    """The supported family (``FAMILIES``) of a config, config dict, ModelConfig or model directory."""
    model_type = _model_type(config_or_path)
    return model_type if model_type in FAMILIES else None


def is_vision_language(config_or_path: Any) -> bool:
    """True when the config / model directory is one of the supported vision-language families."""
    return vlm_family(config_or_path) is not None


# --------------------------------------------------------------------------- processors


@functools.cache
def image_only_processor_class(cls: type[ProcessorMixin]) -> type[ProcessorMixin]:
    """``cls`` without its video processor: loadable and callable without torchvision.

    ProcessorMixin takes its sub-processors from ``get_attributes()``; dropping
    ``video_processor`` there makes ``__init__``/``from_pretrained``/``save_pretrained`` skip it.
    The class keeps its name, so the ``processor_config.json`` it writes names the official class.
    """
    attrs = [a for a in cls.get_attributes() if a != "video_processor"]
    if attrs == cls.get_attributes():
        return cls
    # An __init__ with the same parameters, video_processor optional: from_args_and_dict() reads
    # the accepted keywords from __init__.__code__ and to_dict() saves those in its signature.
    sig = inspect.signature(cls.__init__)
    names = [
        n
        for n, p in sig.parameters.items()
        if n != "self" and p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    ]
    defaults = {
        n: None
        if sig.parameters[n].default is inspect.Parameter.empty
        else sig.parameters[n].default
        for n in names
    }
    defaults["video_processor"] = None
    params = ", ".join(f"{n}=_defaults[{n!r}]" for n in names)
    passed = ", ".join(f"{n}={n}" for n in names)
    namespace = {"_defaults": defaults, "_base": cls}
    exec(  # noqa: S102 - a fixed template over the class's own parameter names
        f"def __init__(self, {params}, **kwargs):\n    _base.__init__(self, {passed}, **kwargs)\n",
        namespace,
    )
    __init__ = namespace["__init__"]

    return type(
        cls.__name__,
        (cls,),
        {
            "__init__": __init__,
            "get_attributes": classmethod(lambda _c: list(attrs)),
            "__module__": cls.__module__,
        },
    )


def _processor_class(path_or_id: str, family: str) -> type[ProcessorMixin]:
    import transformers

    name = PROCESSOR_CLASSES[family]
    for fname in ("processor_config.json", "preprocessor_config.json"):
        f = Path(path_or_id) / fname
        if f.is_file():
            name = json.loads(f.read_text()).get("processor_class", name)
            break
    return getattr(transformers, name)


def load_processor(path_or_id: str | Path, family: str) -> ProcessorMixin:
    """The model's processor: ``AutoProcessor`` where it can be built, else the image-only class."""
    path_or_id = str(path_or_id)
    if is_torchvision_available():
        try:
            return AutoProcessor.from_pretrained(path_or_id)
        except (OSError, ValueError, TypeError, ImportError) as exc:
            log.info("AutoProcessor failed for %s (%s); loading it image-only", path_or_id, exc)
    return image_only_processor_class(_processor_class(path_or_id, family)).from_pretrained(
        path_or_id
    )


# --------------------------------------------------------------------------- loading


def load_vlm(cfg: ModelConfig | str) -> LoadedVLM:
    """Load a vision-language policy from a local directory (or a hub id where a hub is reachable).

    Same ModelConfig as ``rlsd.models.load_policy``: dtype, attention kernel, gradient checkpointing, LoRA.
    """
    if isinstance(cfg, str):
        cfg = ModelConfig(name_or_path=cfg)
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
    t0 = time.perf_counter()
    name = cfg.name_or_path
    path = Path(name).expanduser()
    if path.is_dir():
        path = path.resolve()
        source, digest, load_from = f"local:{path}", dir_digest(path, cache_dir), str(path)
    elif name.startswith(("/", "./", "../", "~")):
        raise FileNotFoundError(f"model.name_or_path={name!r}: no such directory")
    else:
        source, digest, load_from, path = f"hub:{name}", "hub", name, None
    config = AutoConfig.from_pretrained(load_from)
    family = config.model_type
    if family not in FAMILIES:
        raise ValueError(
            f"{name!r} has model_type {family!r}; vision-language families: {', '.join(FAMILIES)}"
        )
    model = AutoModelForImageTextToText.from_pretrained(
        load_from,
        dtype=TORCH_DTYPES[cfg.dtype],
        attn_implementation=(
            # vision towers choose code paths by the kernel's name: keep transformers' own
            "sdpa" if cfg.attn_implementation == "sdpa_grouped" else cfg.attn_implementation
        ),
    )
    processor = load_processor(load_from, family)
    tokenizer = processor.tokenizer
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    model = prepare_for_training(model, tokenizer, cfg)
    log.info(
        "loaded %s model %s from %s (sha256 %s) in %.2fs",
        family,
        name,
        source,
        digest[:12],
        time.perf_counter() - t0,
    )
    return LoadedVLM(
        model=model,
        tokenizer=tokenizer,
        source=source,
        path=str(path or ""),
        digest=digest,
        processor=processor,
        family=family,
    )


# --------------------------------------------------------------------------- encoding prompts


def mm_messages(messages: list[dict[str, Any]], num_images: int) -> list[dict[str, Any]]:
    """A copy of ``messages`` whose last user turn starts with ``num_images`` image parts."""
    out = [dict(m) for m in messages]
    if num_images == 0:
        return out
    users = [i for i, m in enumerate(out) if m["role"] == "user"]
    if not users:
        raise ValueError("images need a user turn to go in")
    turn = out[users[-1]]
    content = turn["content"]
    parts = [{"type": "text", "text": content}] if isinstance(content, str) else list(content)
    turn["content"] = [{"type": "image"} for _ in range(num_images)] + parts
    return out


def mm_prompt_text(loaded: LoadedVLM, messages: list[dict[str, Any]], num_images: int) -> str:
    """The chat-template text of a prompt with ``num_images`` images, before image-token expansion.

    What the privileged-context leak check should look at for a student prompt.
    """
    template = loaded.processor.chat_template or loaded.tokenizer.chat_template
    return loaded.tokenizer.apply_chat_template(
        mm_messages(messages, num_images),
        chat_template=template,
        add_generation_prompt=True,
        tokenize=False,
    )


def encode_mm_prompt(
    loaded: LoadedVLM, messages: list[dict[str, Any]], images: list[Any]
) -> dict[str, Any]:
    """Model inputs of ONE prompt: chat ``messages`` with ``images`` (PIL) before the last user text.

    Returns ``input_ids`` (list[int]) plus the family's vision inputs, without a batch dimension:
    - Qwen2-VL / Qwen2.5-VL / Qwen3-VL: ``pixel_values`` [patches, C*T*P*P] float,
      ``image_grid_thw`` [images, 3] long, ``mm_token_type_ids`` (list[int], 1 on image tokens);
    - SmolVLM / Idefics3: ``pixel_values`` [tiles, 3, H, W] float, ``pixel_attention_mask``
      [tiles, H, W] bool (tiles = sub-images of all the images, global views included).
    With no images only ``input_ids`` (and ``mm_token_type_ids`` for Qwen) are returned.
    """
    processor, tokenizer = loaded.processor, loaded.tokenizer
    text = mm_prompt_text(loaded, messages, len(images))
    if images:
        enc = processor(
            text=[text], images=[list(images)], return_tensors="pt", add_special_tokens=False
        )
    else:
        enc = tokenizer([text], return_tensors="pt", add_special_tokens=False)
    out: dict[str, Any] = {"input_ids": enc["input_ids"][0].tolist()}
    family = loaded.family
    if family in QWEN_FAMILIES:
        if "mm_token_type_ids" in enc:
            out["mm_token_type_ids"] = enc["mm_token_type_ids"][0].tolist()
        else:
            out["mm_token_type_ids"] = mm_token_type_ids(loaded.model.config, out["input_ids"])
        if images:
            out["pixel_values"] = enc["pixel_values"]
            out["image_grid_thw"] = enc["image_grid_thw"]
    elif images:
        out["pixel_values"] = enc["pixel_values"][0]
        if "pixel_attention_mask" in enc:
            out["pixel_attention_mask"] = enc["pixel_attention_mask"][0].bool()
    return out


def mm_token_type_ids(config: PretrainedConfig, input_ids: list[int]) -> list[int]:
    """Qwen-VL token types: 1 on image placeholder tokens, 2 on video ones, 0 on text."""
    image = config.image_token_id
    video = getattr(config, "video_token_id", None)
    return [1 if t == image else 2 if t == video else 0 for t in input_ids]
