"""The teacher's shared-prefix pass equals encoding the prefix once per response."""

from __future__ import annotations

import pytest
import torch

from rlsd.algo import token_logprobs_from_hidden
from rlsd.models import ModelConfig, load_policy
from rlsd.train.forward import (
    ResponseIndex,
    output_head,
    response_hidden_plain,
    response_hidden_shared_prefix,
)


def _case(seed: int, group_size: int):
    g = torch.Generator().manual_seed(seed)
    prefixes = [torch.randint(100, 40000, (n,), generator=g).tolist() for n in (23, 41, 7)]
    lengths = [1, 5, 17, 2, 9, 1, 12, 3, 6][: 3 * group_size]
    responses = [torch.randint(100, 40000, (n,), generator=g).tolist() for n in lengths]
    return prefixes, responses


@pytest.mark.parametrize("which", ["tiny", "smollm2"])
def test_shared_prefix_matches_plain(which, tiny_model_dir, request):
    if which == "tiny":
        policy = load_policy(ModelConfig(name_or_path=str(tiny_model_dir)))
    else:
        policy = request.getfixturevalue("smollm2")
    model = policy.model.eval()
    G = 3
    prefixes, responses = _case(0, G)
    idx = ResponseIndex.build(responses)
    with torch.no_grad():
        plain = response_hidden_plain(
            model, [prefixes[i // G] for i in range(len(responses))], responses, 2
        )
        shared = response_hidden_shared_prefix(model, prefixes, responses, G, 2)
        weight, bias = output_head(model)
        lp_plain, _ = token_logprobs_from_hidden(plain, weight, idx.targets, bias)
        lp_shared, _ = token_logprobs_from_hidden(shared, weight, idx.targets, bias)
    assert shared.shape == plain.shape == (sum(len(r) for r in responses), model.config.hidden_size)
    torch.testing.assert_close(shared, plain, atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(lp_shared, lp_plain, atol=1e-4, rtol=1e-5)


def test_plain_pass_carries_gradient_and_index_scatter_roundtrips(tiny_model_dir):
    policy = load_policy(ModelConfig(name_or_path=str(tiny_model_dir)))
    prefixes, responses = _case(1, 2)
    idx = ResponseIndex.build(responses)
    hidden = response_hidden_plain(policy.model, [prefixes[i // 2] for i in range(6)], responses, 2)
    weight, bias = output_head(policy.model)
    lp, _ = token_logprobs_from_hidden(hidden, weight, idx.targets, bias)
    mat = idx.scatter(lp)
    assert mat.shape == idx.mask.shape
    assert torch.equal(mat[idx.mask == 0], torch.zeros(int((idx.mask == 0).sum())))
    mat.sum().backward()
    assert weight.grad is not None and weight.grad.abs().sum() > 0


def test_group_count_mismatch_is_an_error(tiny_model_dir):
    policy = load_policy(ModelConfig(name_or_path=str(tiny_model_dir)))
    with pytest.raises(ValueError, match="groups of 4"):
        response_hidden_shared_prefix(policy.model, [[1, 2]], [[3]] * 3, 4, 2)


@pytest.mark.parametrize("which", ["tiny", "smollm2"])
def test_shared_prefix_gradients_match_plain(which, tiny_model_dir, request):
    """The student's update through the shared prefix gives the plain path's gradients."""
    path = str(tiny_model_dir) if which == "tiny" else request.getfixturevalue("smollm2").path
    model = load_policy(ModelConfig(name_or_path=path)).model.train()
    G = 3
    prefixes, responses = _case(2, G)
    idx = ResponseIndex.build(responses)
    weight, bias = output_head(model)
    coeff = torch.linspace(-1, 1, idx.num_tokens)

    def grads(hidden_fn):
        model.zero_grad()
        lp, _ = token_logprobs_from_hidden(hidden_fn(), weight, idx.targets, bias)
        (lp * coeff).sum().backward()
        return lp.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    lp_a, g_a = grads(
        lambda: response_hidden_plain(
            model, [prefixes[i // G] for i in range(len(responses))], responses, 2
        )
    )
    lp_b, g_b = grads(lambda: response_hidden_shared_prefix(model, prefixes, responses, G, 2))
    torch.testing.assert_close(lp_b, lp_a, atol=1e-4, rtol=1e-5)
    scale = max(g.abs().max().item() for g in g_a.values())
    for n in g_a:
        torch.testing.assert_close(g_b[n], g_a[n], atol=1e-5 * scale, rtol=1e-4, msg=n)


def test_grouped_kv_attention_gives_transformers_sdpa_values_and_gradients(tiny_model_dir):
    """``sdpa_grouped`` (the default) hands grouped key/value heads to torch instead of copying
    them; the shared-prefix pass (a mask, a repeated prompt cache) must not change by a hair."""
    from rlsd.models.attention import SDPA_GROUPED

    G = 3
    prefixes, responses = _case(2, G)
    idx = ResponseIndex.build(responses)
    upstream = torch.randn(idx.num_tokens, generator=torch.Generator().manual_seed(0))
    results = {}
    for attn in ("sdpa", "sdpa_grouped"):
        policy = load_policy(
            ModelConfig(name_or_path=str(tiny_model_dir), attn_implementation=attn)
        )
        model = policy.model
        assert model.config.num_key_value_heads < model.config.num_attention_heads
        if attn == "sdpa_grouped":
            assert model.config._attn_implementation == SDPA_GROUPED
        hidden = response_hidden_shared_prefix(model, prefixes, responses, G, 2)
        weight, bias = output_head(model)
        lp, _ = token_logprobs_from_hidden(hidden, weight, idx.targets, bias)
        (lp * upstream).sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results[attn] = (lp.detach(), grads)
    torch.testing.assert_close(results["sdpa_grouped"][0], results["sdpa"][0], atol=1e-6, rtol=1e-6)
    assert results["sdpa_grouped"][1].keys() == results["sdpa"][1].keys()
    for name, g in results["sdpa"][1].items():
        torch.testing.assert_close(results["sdpa_grouped"][1][name], g, atol=1e-6, rtol=1e-5)


def test_saved_model_does_not_name_the_products_attention(tiny_model_dir, tmp_path):
    """A model saved by the product loads anywhere: config.json names no rlsd-only kernel."""
    policy = load_policy(ModelConfig(name_or_path=str(tiny_model_dir)))
    policy.model.save_pretrained(tmp_path)
    assert "rlsd" not in (tmp_path / "config.json").read_text()
