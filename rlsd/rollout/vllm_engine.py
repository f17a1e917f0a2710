"""vLLM rollouts behind the same interface, for GPU machines. vllm is imported only when used."""

from __future__ import annotations

import time

import torch

from rlsd.rollout.base import RolloutBatch, SamplingSettings, derive_seed


class VLLMEngine:
    """Samples with vLLM; ``sync_weights`` copies the policy's weights in after each optimizer step."""

    def __init__(
        self, model_path: str, gpu_memory_utilization: float = 0.3, dtype: str = "bfloat16"
    ):
        try:
            from vllm import LLM
        except ImportError as exc:  # pragma: no cover - exercised only where vllm is missing
            raise ImportError(
                "rollout.engine='vllm' needs vllm: pip install 'rlsd[gpu]' on a CUDA machine"
            ) from exc
        self.llm = LLM(
            model=model_path,
            gpu_memory_utilization=gpu_memory_utilization,
            dtype=dtype,
            enable_prefix_caching=True,  # the G samples of a group share their prompt
        )

    def sync_weights(self, model: torch.nn.Module) -> None:
        runner = self.llm.llm_engine.model_executor.driver_worker.model_runner
        runner.model.load_weights(((k, v) for k, v in model.state_dict().items()))

    def generate(
        self,
        prompt_ids: list[list[int]],
        group_size: int,
        settings: SamplingSettings,
        seed: int,
        group_offset: int = 0,
    ) -> RolloutBatch:
        from vllm import SamplingParams

        t0 = time.perf_counter()
        params = SamplingParams(
            n=group_size,
            temperature=settings.temperature if settings.do_sample else 0.0,
            top_p=settings.top_p,
            top_k=settings.top_k or -1,
            max_tokens=settings.max_new_tokens,
            stop=settings.stop or None,
            include_stop_str_in_output=True,
            seed=derive_seed(seed, group_offset),
        )
        outputs = self.llm.generate(
            [{"prompt_token_ids": p} for p in prompt_ids], params, use_tqdm=False
        )
        responses, texts, truncated = [], [], []
        for out in outputs:
            for c in out.outputs:
                responses.append(list(c.token_ids))
                texts.append(c.text)
                truncated.append(c.finish_reason == "length")
        return RolloutBatch(
            prompt_ids=[list(p) for p in prompt_ids],
            response_ids=responses,
            texts=texts,
            truncated=truncated,
            group_size=group_size,
            settings=settings,
            timings={"generate": time.perf_counter() - t0},
        )
