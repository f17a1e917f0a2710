"""The on-policy check: RLSD on the bundled SmolLM2 with vLLM rollouts samples from the policy
being updated, after every optimizer step; and the check fails when a weight sync is skipped.

The trainer compares the engine's log-prob of each sampled token with its own recomputation
(at the sampling temperature) and logs ``rollout/logprob_diff_max`` / ``_mean`` (nats) per
step. Measured on this CPU machine (fp32, 3 steps at lr 1e-4): synced, max <= 4.2e-5 and mean
<= 7.2e-6 at every step; with ``sync_weights`` a no-op, after the first step max 10.3 and mean
0.43. The tolerances below sit ~20x above the synced figures and far below the unsynced ones.
"""

from __future__ import annotations

import importlib.util

import pytest

from rlsd.rollout import vllm_engine
from rlsd.train.config import load_config
from rlsd.train.trainer import train

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="needs vllm"),
]

DIFF_MAX_TOL = 1e-3
DIFF_MEAN_TOL = 1e-4
STEPS = 3


def _config(out_dir):
    return load_config(
        None,
        {
            # the embedded defaults (SmolLM2, arithmetic, RLSD, T = 0.7, the answer-line stop),
            # smaller; the toy verifier's verdicts vary within each group, so every step moves
            # the weights
            "task.verifier": "toy-even-length",
            "task.arithmetic.n_train": 32,
            "task.arithmetic.n_heldout": 8,
            "rollout.engine": "vllm",
            "rollout.group_size": 4,
            "rollout.prompts_per_step": 2,
            "rollout.sampling.max_new_tokens": 24,
            "optim.lr": 1e-4,  # large: a skipped sync leaves the sampler visibly behind
            "eval.num_tasks": 0,
            "run.steps": STEPS,
            "run.checkpoint_every": 0,
            "run.output_dir": str(out_dir),
        },
    )


@pytest.fixture
def close_engine():
    yield
    vllm_engine._close_live_engine()


def test_every_rollout_samples_from_the_updated_policy(tmp_path, monkeypatch, close_engine):
    syncs = []
    sync = vllm_engine.VLLMEngine.sync_weights
    monkeypatch.setattr(
        vllm_engine.VLLMEngine,
        "sync_weights",
        lambda self, model: syncs.append(1) or sync(self, model),
    )
    result = train(_config(tmp_path / "synced"), show_progress=False)
    assert [m["step"] for m in result.metrics] == list(range(1, STEPS + 1))
    for m in result.metrics:
        assert m["actor/grad_norm"] > 0 and m["actor/skipped_step"] == 0
        assert m["rollout/logprob_diff_max"] < DIFF_MAX_TOL, m
        assert m["rollout/logprob_diff_mean"] < DIFF_MEAN_TOL, m
    assert len(syncs) == STEPS  # after every optimizer step


def test_a_skipped_weight_sync_is_caught(tmp_path, monkeypatch, close_engine):
    monkeypatch.setattr(vllm_engine.VLLMEngine, "sync_weights", lambda self, model: None)
    result = train(_config(tmp_path / "stale"), show_progress=False)
    first, second = result.metrics[0], result.metrics[1]
    # before any update the engine holds the policy's weights ...
    assert first["rollout/logprob_diff_max"] < DIFF_MAX_TOL
    # ... after the first optimizer step it does not, and the check shows it
    assert second["rollout/logprob_diff_max"] > DIFF_MAX_TOL
    assert second["rollout/logprob_diff_mean"] > DIFF_MEAN_TOL
