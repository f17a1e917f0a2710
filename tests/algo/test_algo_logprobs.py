"""Chunked sampled-token log-probs from hidden states, checked against the naive path."""

import pytest
import torch

from rlsd.algo import token_logprobs_from_hidden, token_logprobs_from_logits

M, H, V = 37, 16, 53  # M·V = 1961 differs from every input size (M·H, V·H, V, M)


def _naive(hidden, weight, targets, bias, temperature):
    logits = hidden.double() @ weight.double().T
    if bias is not None:
        logits = logits + bias.double()
    logp_all = torch.log_softmax(logits / temperature, dim=-1)
    logprobs = logp_all.gather(-1, targets[..., None]).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logprobs, entropy


def _inputs(seed: int, with_bias: bool):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(M, H, generator=g).requires_grad_(True)
    weight = (torch.randn(V, H, generator=g) * 0.5).requires_grad_(True)
    bias = torch.randn(V, generator=g).requires_grad_(True) if with_bias else None
    targets = torch.randint(0, V, (M,), generator=g)
    upstream = torch.randn(M, generator=g)
    return hidden, weight, bias, targets, upstream


@pytest.mark.parametrize("chunk_size", [1, 5, 8, 37, 64])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("keep_probs", [True, False])
def test_values_and_gradients_match_naive(chunk_size, with_bias, temperature, keep_probs):
    hidden, weight, bias, targets, upstream = _inputs(chunk_size, with_bias)
    lp, ent = token_logprobs_from_hidden(
        hidden,
        weight,
        targets,
        bias=bias,
        temperature=temperature,
        chunk_size=chunk_size,
        keep_probs_bytes=2**30 if keep_probs else 0,
    )
    ref_lp, ref_ent = _naive(hidden, weight, targets, bias, temperature)
    assert lp.dtype == torch.float32 and lp.shape == (M,)
    torch.testing.assert_close(lp.double(), ref_lp, rtol=0, atol=1e-5)
    torch.testing.assert_close(ent.double(), ref_ent, rtol=0, atol=1e-5)
    assert not ent.requires_grad

    params = [hidden, weight] + ([bias] if with_bias else [])
    grads = torch.autograd.grad((lp * upstream).sum(), params)
    ref_grads = torch.autograd.grad((ref_lp * upstream.double()).sum(), params)
    for got, ref in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got.double(), ref.double(), rtol=0, atol=1e-5)


def test_only_some_inputs_require_grad_and_no_grad_path():
    hidden, weight, bias, targets, upstream = _inputs(0, True)
    frozen_w = weight.detach()
    lp, _ = token_logprobs_from_hidden(hidden, frozen_w, targets, bias=bias.detach(), chunk_size=8)
    (gh,) = torch.autograd.grad((lp * upstream).sum(), [hidden])
    ref_lp, _ = _naive(hidden, frozen_w, targets, bias.detach(), 1.0)
    (ref_gh,) = torch.autograd.grad((ref_lp * upstream.double()).sum(), [hidden])
    torch.testing.assert_close(gh.double(), ref_gh.double(), rtol=0, atol=1e-5)

    lp, _ = token_logprobs_from_hidden(hidden.detach(), weight, targets, chunk_size=8)
    (gw,) = torch.autograd.grad(lp.sum(), [weight])
    ref_lp, _ = _naive(hidden.detach(), weight, targets, None, 1.0)
    (ref_gw,) = torch.autograd.grad(ref_lp.sum(), [weight])
    torch.testing.assert_close(gw.double(), ref_gw.double(), rtol=0, atol=1e-5)

    with torch.no_grad():  # the teacher path
        lp, ent = token_logprobs_from_hidden(hidden, weight, targets, bias=bias, chunk_size=8)
    assert not lp.requires_grad and not ent.requires_grad
    lp2, ent2 = token_logprobs_from_hidden(
        hidden.detach(), weight.detach(), targets, bias.detach(), chunk_size=8, return_entropy=False
    )
    assert ent2 is None and torch.equal(lp, lp2)


def test_tied_embeddings_accumulate_both_uses():
    g = torch.Generator().manual_seed(3)
    weight = torch.randn(V, H, generator=g, requires_grad=True)
    mix = torch.randn(H, H, generator=g)
    ids = torch.randint(0, V, (M,), generator=g)
    targets = torch.randint(0, V, (M,), generator=g)

    def run(fn):
        hidden = torch.tanh(torch.nn.functional.embedding(ids, weight) @ mix)
        return torch.autograd.grad(fn(hidden).sum(), [weight])[0]

    got = run(lambda h: token_logprobs_from_hidden(h, weight, targets, chunk_size=6)[0])
    ref = run(lambda h: _naive(h, weight, targets, None, 1.0)[0])
    torch.testing.assert_close(got.double(), ref.double(), rtol=0, atol=1e-5)


def test_leading_dims_and_bf16_inputs():
    hidden, weight, _, targets, _ = _inputs(1, False)
    lp3, _ = token_logprobs_from_hidden(hidden.view(1, M, H), weight, targets.view(1, M))
    lp, _ = token_logprobs_from_hidden(hidden, weight, targets)
    assert lp3.shape == (1, M) and torch.equal(lp3.view(M), lp)

    hb = hidden.detach().bfloat16().requires_grad_(True)
    wb = weight.detach().bfloat16().requires_grad_(True)
    lpb, _ = token_logprobs_from_hidden(hb, wb, targets, chunk_size=10)
    assert lpb.dtype == torch.float32
    ref, _ = _naive(hb.float(), wb.float(), targets, None, 1.0)
    torch.testing.assert_close(lpb.double(), ref, rtol=0, atol=1e-5)
    gh, gw = torch.autograd.grad(lpb.sum(), [hb, wb])
    assert gh.dtype == torch.bfloat16 and gw.dtype == torch.bfloat16


def test_no_tokens_by_vocab_tensor_is_saved_for_backward():
    hidden, weight, bias, targets, _ = _inputs(2, True)

    def saved_sizes(fn):
        sizes = []

        def pack(t):
            sizes.append(t.numel())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            fn()
        return sizes

    naive = saved_sizes(lambda: _naive(hidden, weight, targets, bias, 1.0))
    assert M * V in naive  # the probe sees what the naive path keeps
    chunked = saved_sizes(
        lambda: token_logprobs_from_hidden(
            hidden, weight, targets, bias=bias, chunk_size=8, keep_probs_bytes=0
        )
    )
    assert chunked and max(chunked) < M * V
    assert M * V not in chunked


def test_kept_softmax_is_bounded_and_a_second_backward_recomputes():
    hidden, weight, bias, targets, upstream = _inputs(4, True)
    ref_lp, _ = _naive(hidden, weight, targets, bias, 0.7)
    ref = torch.autograd.grad((ref_lp * upstream.double()).sum(), [hidden, weight, bias])
    # the softmax is M x V float32: kept with room for it, recomputed with one byte less
    for budget in (M * V * 4, M * V * 4 - 1):
        lp, _ = token_logprobs_from_hidden(
            hidden, weight, targets, bias=bias, temperature=0.7, keep_probs_bytes=budget
        )
        loss = (lp * upstream).sum()
        first = torch.autograd.grad(loss, [hidden, weight, bias], retain_graph=True)
        second = torch.autograd.grad(loss, [hidden, weight, bias])  # kept softmax was consumed
        for a, b, r in zip(first, second, ref, strict=True):
            torch.testing.assert_close(a.double(), r.double(), rtol=0, atol=1e-5)
            torch.testing.assert_close(b.double(), r.double(), rtol=0, atol=1e-5)


def test_target_and_argument_errors():
    hidden, weight, _, targets, _ = _inputs(4, False)
    bad = targets.clone()
    bad[3] = -100
    with pytest.raises(ValueError, match=r"-100"):
        token_logprobs_from_hidden(hidden, weight, bad)
    bad[3] = V
    with pytest.raises(ValueError, match="targets must lie"):
        token_logprobs_from_logits(torch.zeros(M, V), bad)
    with pytest.raises(ValueError, match="chunk_size"):
        token_logprobs_from_hidden(hidden, weight, targets, chunk_size=0)
    with pytest.raises(ValueError, match="temperature"):
        token_logprobs_from_hidden(hidden, weight, targets, temperature=0.0)


@pytest.mark.parametrize("chunk_size", [1, 4, 1024])
def test_logprobs_from_logits_matches_log_softmax(chunk_size):
    g = torch.Generator().manual_seed(chunk_size)
    logits = torch.randn(3, 5, V, generator=g, requires_grad=True)
    targets = torch.randint(0, V, (3, 5), generator=g)
    got = token_logprobs_from_logits(logits, targets, temperature=0.8, chunk_size=chunk_size)
    ref = torch.log_softmax(logits / 0.8, -1).gather(-1, targets[..., None]).squeeze(-1)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-6)
    (g1,) = torch.autograd.grad(got.sum(), [logits])
    (g2,) = torch.autograd.grad(ref.sum(), [logits])
    torch.testing.assert_close(g1, g2, rtol=0, atol=1e-6)
    lp_hidden, _ = token_logprobs_from_hidden(
        torch.eye(V)[:4], torch.eye(V) * 2.0, torch.tensor([0, 1, 2, 3])
    )
    lp_logits = token_logprobs_from_logits(torch.eye(V)[:4] * 2.0, torch.tensor([0, 1, 2, 3]))
    torch.testing.assert_close(lp_hidden, lp_logits)
