"""GPU check for multimodal RLSD: GRPO and RLSD steps of the real trainer, with images, in bf16 on
a randomly initialised vision-language model with the layer sizes of Qwen2-VL-2B (text: hidden
1536, 28 layers, 12 heads / 2 KV heads, vocab 151936; vision: 32 blocks of width 1280, patch 14,
2x2 merge), on shape-counting images (224 px: 64 image tokens per prompt).

    python benchmarks/gpu_vlm_step.py --model-dir DIR [--steps 2] [--prompts 8] [--group 8]

``DIR`` is a tiny Qwen2-VL folder from ``tests.helpers.tiny_vlm.make_tiny_vlm("qwen2_vl", DIR)``: its
tokenizer, chat template and processor are reused, its sizes replaced. Random weights learn
nothing; the point is that every phase runs on CUDA in bf16 at a realistic size with images, and
what each costs. Prints time per phase, peak GPU memory and the RLSD/GRPO step-time ratio.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("RLSD_NO_PROGRESS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from gpu_step import _toy_verifier, print_medians, run_arms  # noqa: E402

TEXT_2B = {
    "hidden_size": 1536,
    "intermediate_size": 8960,
    "num_hidden_layers": 28,
    "num_attention_heads": 12,
    "num_key_value_heads": 2,
    "vocab_size": 151936,
    "max_position_embeddings": 32768,
}
VISION_2B = {"depth": 32, "embed_dim": 1280, "hidden_size": 1536, "num_heads": 16, "mlp_ratio": 4}


def scaled_config(cfg):
    """The tiny config with Qwen2-VL-2B's sizes (rebuilt, so derived fields follow)."""
    text = cfg.text_config.to_dict()
    for derived in ("layer_types", "head_dim", "max_window_layers"):
        text.pop(derived, None)
    text.update(TEXT_2B)
    rope = dict(text.get("rope_parameters") or {})
    rope["mrope_section"] = [16, 24, 24]  # head_dim 128 -> 64 frequencies, as Qwen2-VL
    text["rope_parameters"] = rope
    vision = {**cfg.vision_config.to_dict(), **VISION_2B}
    top = {k: v for k, v in cfg.to_dict().items() if k not in ("text_config", "vision_config")}
    return type(cfg)(text_config=text, vision_config=vision, **top)


def build_model(src: Path, dst: Path, tiny: bool, device: str, image_px: int) -> int:
    import shutil

    from transformers import AutoConfig, AutoModelForImageTextToText

    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    cfg = AutoConfig.from_pretrained(src)
    if not tiny:
        cfg = scaled_config(cfg)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(cfg, dtype=torch.bfloat16)
    n = sum(p.numel() for p in model.parameters())
    model.save_pretrained(dst)
    del model
    # let a 224 px image keep its resolution: (224 / 14)^2 patches, merged 2x2 -> 64 tokens
    from rlsd.models.vlm import load_processor

    proc = load_processor(src, "qwen2_vl")
    proc.image_processor.size = {"shortest_edge": 56 * 56, "longest_edge": image_px * image_px}
    proc.save_pretrained(dst)
    return n


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model-dir", required=True, help="a tiny Qwen2-VL folder (make_tiny_vlm)")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--tiny", action="store_true", help="keep the tiny sizes (smoke test, CPU ok)")
    args = ap.parse_args()
    from _machine import describe

    cuda = torch.cuda.is_available()
    assert cuda or args.tiny, "this check needs a CUDA device (or --tiny)"
    device = "cuda" if cuda else "cpu"
    print("machine:", describe(), flush=True)
    _toy_verifier()
    work = Path(tempfile.mkdtemp())
    model_dir = work / "random-qwen2-vl"
    n = build_model(Path(args.model_dir), model_dir, args.tiny, device, args.image_size)
    if cuda:
        torch.cuda.empty_cache()
    print(f"model: random Qwen2-VL, {n / 1e9:.2f} B parameters, bf16", flush=True)
    overrides = [
        f"model.name_or_path={model_dir}",
        f"model.dtype={'bfloat16' if cuda else 'float32'}",
        "task.generator=shape_count",
        f"task.shape_count.image_size={args.image_size}",
        f"task.shape_count.n_train={max(16, args.prompts * (args.steps + 1))}",
        "task.shape_count.n_heldout=0",
        f"task.shape_count.image_dir={work / 'images'}",
        "task.verifier=toy-even-length",
        f"rollout.prompts_per_step={args.prompts}",
        f"rollout.group_size={args.group}",
        f"rollout.sampling.max_new_tokens={args.max_new_tokens}",
        "rollout.sampling.temperature=1.0",
        "rollout.sampling.stop_regex=null",
        "rollout.max_batch_sequences=128",
        "run.micro_batch_sequences=64",
        "eval.num_tasks=0",
        f"run.steps={args.steps + 1}",
    ]
    print_medians(run_arms(overrides, args.steps, cuda))


if __name__ == "__main__":
    main()
