"""Shared-prefix multimodal forward = plain multimodal forward (log-probs and every gradient)."""

from __future__ import annotations

import pytest
import torch

import rlsd.train.forward_mm as forward_mm
from rlsd.algo import token_logprobs_from_hidden
from rlsd.models.vlm import QWEN_FAMILIES, LoadedVLM, encode_mm_prompt
from rlsd.rollout.hf_generate_mm import HFGenerateEngineMM
from rlsd.train.forward import ResponseIndex, output_head
from rlsd.train.forward_mm import response_hidden_plain_mm, response_hidden_shared_prefix_mm
from tests.helpers import tiny_vlm
from tests.helpers.tiny_vlm import shapes_image

vlm = tiny_vlm.vlm  # the shared fixture: a tiny model of each family
G = 3


def _prompts(vlm: LoadedVLM) -> list[dict]:
    """Three groups: one image, two images of different shapes, and no image."""
    return [
        encode_mm_prompt(
            vlm, [{"role": "user", "content": "Count the shapes."}], [shapes_image(64, 64, 3, 0)]
        ),
        encode_mm_prompt(
            vlm,
            [
                {"role": "system", "content": "Answer with a number."},
                {"role": "user", "content": "Which picture has more rectangles?"},
            ],
            [shapes_image(96, 48, 2, 1), shapes_image(64, 64, 4, 2)],
        ),
        encode_mm_prompt(vlm, [{"role": "user", "content": "No picture today."}], []),
    ]


def _responses(seed: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    lengths = [1, 5, 7, 2, 6, 1, 4, 3, 6]
    return [torch.randint(100, 40000, (n,), generator=g).tolist() for n in lengths]


def test_shared_prefix_matches_plain_logprobs_and_gradients(vlm):
    model = vlm.model.train()
    pad = vlm.tokenizer.pad_token_id
    prompts, responses = _prompts(vlm), _responses(0)
    idx = ResponseIndex.build(responses)
    weight, bias = output_head(model)
    coeff = torch.linspace(-1, 1, idx.num_tokens)

    def run(hidden_fn):
        model.zero_grad()
        hidden = hidden_fn()
        lp, _ = token_logprobs_from_hidden(hidden, weight, idx.targets, bias)
        (lp * coeff).sum().backward()
        return hidden.detach(), lp.detach(), {n: p.grad for n, p in model.named_parameters()}

    h_a, lp_a, g_a = run(
        lambda: response_hidden_plain_mm(
            model, [prompts[i // G] for i in range(len(responses))], responses, pad
        )
    )
    g_a = {n: g.clone() for n, g in g_a.items()}
    h_b, lp_b, g_b = run(
        lambda: response_hidden_shared_prefix_mm(model, prompts, responses, G, pad)
    )
    assert h_b.shape == h_a.shape == (idx.num_tokens, model.config.text_config.hidden_size)
    torch.testing.assert_close(h_b, h_a, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(lp_b, lp_a, atol=1e-5, rtol=1e-5)
    scale = max(g.abs().max().item() for g in g_a.values())
    vision = [n for n in g_a if any(k in n for k in ("visual", "vision_model", "connector"))]
    assert vision, "the vision tower is part of the policy"
    for n in g_a:
        assert g_a[n] is not None and g_b[n] is not None, f"{n} got no gradient"
        torch.testing.assert_close(g_b[n], g_a[n], atol=1e-5 * scale, rtol=1e-4, msg=n)
    assert all(g_a[n].abs().sum() > 0 for n in vision), "gradient reaches every vision parameter"


def test_generation_logprobs_equal_the_shared_prefix_forward(vlm, monkeypatch):
    """Responses continue the prompt's (M-RoPE) positions exactly as generate() placed them."""
    model = vlm.model.eval()
    pad = vlm.tokenizer.pad_token_id
    prompts = _prompts(vlm)[:2]
    engine = HFGenerateEngineMM(model, vlm.tokenizer)
    inputs, width = engine.model_inputs([p for p in prompts for _ in range(2)])
    torch.manual_seed(0)
    with torch.no_grad():
        out = model.generate(
            **inputs,
            max_new_tokens=5,
            do_sample=True,
            output_logits=True,
            return_dict_in_generate=True,
            pad_token_id=pad,
            eos_token_id=None,
            suppress_tokens=[vlm.image_token_id],
        )
    sampled = out.sequences[:, width:]
    lp_gen = torch.log_softmax(torch.stack(out.logits, 1).float(), -1)
    lp_gen = lp_gen.gather(-1, sampled[..., None]).reshape(-1)
    responses = sampled.tolist()
    idx = ResponseIndex.build(responses)
    weight, bias = output_head(model)
    with torch.no_grad():
        hidden = response_hidden_shared_prefix_mm(model, prompts, responses, 2, pad)
        lp, _ = token_logprobs_from_hidden(hidden, weight, idx.targets, bias)
    torch.testing.assert_close(lp, lp_gen, atol=1e-5, rtol=1e-5)
    if vlm.family in QWEN_FAMILIES:
        # Control: responses placed right after the prompt's length, ignoring the rope delta of
        # its images, are measurably off.
        real = forward_mm.prompt_positions

        def no_delta(*args):
            positions, deltas = real(*args)
            return positions, torch.zeros_like(deltas)

        monkeypatch.setattr(forward_mm, "prompt_positions", no_delta)
        with torch.no_grad():
            wrong = response_hidden_shared_prefix_mm(model, prompts, responses, 2, pad)
        lp_wrong, _ = token_logprobs_from_hidden(wrong, weight, idx.targets, bias)
        assert (lp_wrong - lp_gen).abs().max() > 1e-4


def test_vision_tower_runs_once_per_group(vlm):
    model = vlm.model.eval()
    base = model.model
    tower = base.visual if vlm.family in QWEN_FAMILIES else base.vision_model
    seen: list[int] = []
    hook = tower.register_forward_hook(
        lambda _m, args, kwargs, _out: seen.append(
            (args[0] if args else kwargs.get("pixel_values", kwargs.get("hidden_states"))).shape[0]
        ),
        with_kwargs=True,
    )
    prompts, responses = _prompts(vlm), _responses(1)
    pad = vlm.tokenizer.pad_token_id
    try:
        with torch.no_grad():
            response_hidden_plain_mm(
                model, [prompts[i // G] for i in range(len(responses))], responses, pad
            )
            plain, seen[:] = sum(seen), []
            response_hidden_shared_prefix_mm(model, prompts, responses, G, pad)
            shared = sum(seen)
    finally:
        hook.remove()
    assert shared > 0 and plain == G * shared


def test_errors_are_clear(vlm):
    model, pad = vlm.model, vlm.tokenizer.pad_token_id
    prompts = _prompts(vlm)
    with pytest.raises(ValueError, match="groups of 4"):
        response_hidden_shared_prefix_mm(model, prompts[:1], [[5]] * 3, 4, pad)
    with pytest.raises(ValueError, match="placeholder"):
        response_hidden_plain_mm(model, prompts[:1], [[5, vlm.image_token_id, 6]], pad)
