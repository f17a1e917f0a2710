"""Greedy accuracy on held-out tasks, with the same verifiers that give training rewards."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from torch import nn
from transformers import PreTrainedTokenizerBase

from rlsd.rollout import HFGenerateEngine, SamplingSettings
from rlsd.tasks.record import Task
from rlsd.train.batch import student_prompt_ids
from rlsd.train.rewards import score_responses

if TYPE_CHECKING:
    from rlsd.train.prompts import PromptEncoder


@dataclass
class EvalResult:
    accuracy: float
    num_tasks: int
    num_correct: int
    mean_response_tokens: float
    rows: list[dict] = field(default_factory=list)  # per task: id, passed, score, detail, response

    def summary(self) -> dict[str, float]:
        return {
            "eval/accuracy": self.accuracy,
            "eval/num_tasks": float(self.num_tasks),
            "eval/mean_response_tokens": self.mean_response_tokens,
        }


def evaluate(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    tasks: list[Task],
    max_new_tokens: int = 64,
    max_batch_sequences: int = 64,
    stop_regex: str | None = None,
    verifier_override: str | None = None,
    prompts: PromptEncoder | None = None,
) -> EvalResult:
    """Greedy accuracy; ``prompts`` encodes tasks for a vision-language policy (with images)."""
    if not tasks:
        return EvalResult(0.0, 0, 0, 0.0)
    settings = SamplingSettings(
        do_sample=False, max_new_tokens=max_new_tokens, stop_regex=stop_regex
    )
    if prompts is not None and prompts.multimodal:
        from rlsd.rollout.hf_generate_mm import HFGenerateEngineMM

        engine = HFGenerateEngineMM(model, tokenizer, max_batch_sequences=max_batch_sequences)
        encoded = [prompts.student(t) for t in tasks]
    else:
        engine = HFGenerateEngine(model, tokenizer, max_batch_sequences=max_batch_sequences)
        encoded = [student_prompt_ids(tokenizer, t) for t in tasks]
    batch = engine.generate(encoded, 1, settings, seed=0)
    results = score_responses(batch.texts, tasks, verifier_override)
    correct = sum(r.passed for r in results)
    rows = [
        {
            "id": t.id,
            "passed": r.passed,
            "score": r.score,
            "detail": r.detail,
            "response": text,
        }
        for t, r, text in zip(tasks, results, batch.texts, strict=True)
    ]
    lengths = [len(r) for r in batch.response_ids]
    return EvalResult(correct / len(tasks), len(tasks), correct, sum(lengths) / len(lengths), rows)
