"""The trainer on a tiny vision-language model: images through rollout, student and teacher.

What the text path proves (RLSD moves the policy with credit inside the clip band, λ = 0 is
exactly GRPO, a resumed run reproduces an uninterrupted one) is proven here again with images,
on Qwen2-VL (M-RoPE, patch tokens) and SmolVLM (tiles), from the shape-counting generator.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rlsd.train.config import load_config
from rlsd.train.trainer import train

FAMILIES = ["qwen2_vl", "smolvlm"]


@pytest.fixture(scope="module", params=FAMILIES)
def tiny_vlm(request, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.helpers.tiny_vlm import make_tiny_vlm

    if request.param == "smolvlm":
        pytest.importorskip("num2words", reason="SmolVLM's processor needs num2words")
    return make_tiny_vlm(request.param, tmp_path_factory.mktemp(request.param) / "model")


def vlm_config(model_dir: Path, out_dir: Path, image_dir: Path, **overrides):
    base = {
        "model.name_or_path": str(model_dir),
        "task.generator": "shape_count",
        "task.shape_count.n_train": 8,
        "task.shape_count.n_heldout": 4,
        "task.shape_count.image_size": 64,
        "task.shape_count.image_dir": str(image_dir),
        "task.verifier": "toy-even-length",
        "rollout.group_size": 4,
        "rollout.prompts_per_step": 2,
        "rollout.max_batch_sequences": 8,
        "rollout.sampling.temperature": 1.0,
        "rollout.sampling.max_new_tokens": 6,
        "eval.num_tasks": 2,
        "eval.max_new_tokens": 4,
        "run.steps": 2,
        "run.micro_batch_sequences": 8,
        "run.checkpoint_every": 1,
        "run.output_dir": str(out_dir),
        "run.num_threads": 1,
    }
    base.update(overrides)
    return load_config(None, base)


@pytest.fixture(autouse=True)
def _toy_verifier():
    from tests.helpers.toy_verifier import register

    register()


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "final" / "model.safetensors"))


def test_rlsd_trains_a_tiny_vlm_with_images(tiny_vlm: Path, tmp_path: Path) -> None:
    cfg = vlm_config(tiny_vlm, tmp_path / "r", tmp_path / "img", **{"algo.name": "rlsd",
                                                                   "algo.lam0": 1.0})  # fmt: skip
    result = train(cfg, show_progress=False)
    assert len(result.metrics) == 2
    for m in result.metrics:
        assert all(v == v for k, v in m.items() if k.startswith(("actor/", "rlsd/")))
        if "rlsd/weight_mean" in m:
            assert 0.8 - 1e-6 <= m["rlsd/weight_mean"] <= 1.2 + 1e-6
    before = load_file(str(tiny_vlm / "model.safetensors"))
    after = _weights(result.output_dir)
    moved = [k for k in before if not torch.equal(before[k], after[k])]
    assert moved, "the policy must move"
    # the images reached the model: the vision tower's weights got gradients too
    assert any("visual" in k or "vision" in k for k in moved), moved[:10]
    assert result.eval_after is not None and result.eval_after.num_tasks == 2
    sheet = result.output_dir / "image_samples.png"  # a few task images, logged with runs
    from PIL import Image

    assert Image.open(sheet).size[0] > 64


def test_easy_vqa_tasks_are_scored_by_math_answer_in_training(tiny_vlm: Path, tmp_path) -> None:
    cfg = vlm_config(tiny_vlm, tmp_path / "v", tmp_path / "img", **{
        "task.generator": "easy_vqa", "task.easy_vqa.n_train": 4, "task.easy_vqa.n_heldout": 2,
        "task.easy_vqa.image_dir": str(tmp_path / "img"),
        "task.verifier": None, "algo.name": "grpo", "run.steps": 1, "eval.num_tasks": 2})  # fmt: skip
    result = train(cfg, show_progress=False)
    assert result.metrics[0]["reward/mean"] >= 0.0
    details = {r["detail"] for r in result.eval_after.rows}
    assert all(isinstance(d, str) for d in details)
    from rlsd.train.data import load_run_tasks

    assert {t.verifier for t in load_run_tasks(cfg.task).train} == {"math-answer"}


def test_lambda_zero_rlsd_is_exactly_grpo_with_images(tiny_vlm: Path, tmp_path: Path) -> None:
    kw = {"run.steps": 1, "eval.num_tasks": 0}
    grpo = train(vlm_config(tiny_vlm, tmp_path / "g", tmp_path / "img", **{"algo.name": "grpo"},
                            **kw), show_progress=False)  # fmt: skip
    rlsd = train(vlm_config(tiny_vlm, tmp_path / "r", tmp_path / "img",
                            **{"algo.name": "rlsd", "algo.lam0": 0.0}, **kw),
                 show_progress=False)  # fmt: skip
    a, b = _weights(grpo.output_dir), _weights(rlsd.output_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert grpo.metrics[0]["actor/loss"] == rlsd.metrics[0]["actor/loss"]


def test_resumed_vlm_run_reproduces_the_uninterrupted_one(tiny_vlm: Path, tmp_path: Path) -> None:
    kw = {"algo.name": "rlsd", "eval.num_tasks": 0, "teacher.sync_interval": 2}
    straight = train(vlm_config(tiny_vlm, tmp_path / "s", tmp_path / "img", **kw),
                     show_progress=False)  # fmt: skip
    first = vlm_config(tiny_vlm, tmp_path / "k", tmp_path / "img", **kw, **{"run.steps": 1})
    train(first, show_progress=False)
    resumed = train(vlm_config(tiny_vlm, tmp_path / "k", tmp_path / "img", **kw), resume=True,
                    show_progress=False)  # fmt: skip
    a, b = _weights(straight.output_dir), _weights(resumed.output_dir)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    timing = ("time/", "perf/")
    strip = [{k: v for k, v in m.items() if not k.startswith(timing)} for m in resumed.metrics]
    want = [{k: v for k, v in m.items() if not k.startswith(timing)} for m in straight.metrics]
    assert strip == want
