"""Peak RSS of a training step's update, and how it grows with the vocabulary.

    python benchmarks/memory.py [--vocab 32768 131072] [--chunk 256]

Each measurement runs in a fresh process: a Llama-shaped model (hidden 256, 4 layers) with the given
vocabulary takes one warm-up update (so AdamW's state exists) and then one measured update on
32 sequences of 64 prompt + 32 response tokens, while a thread samples the process RSS every 2 ms.
Printed is the peak RSS above the RSS just before the measured update (activations, logits,
gradients), for the product's chunked log-prob path and for a naive full-vocabulary log-softmax.
The chunked path should grow with the vocabulary only by parameter-sized tensors (the V x H head's
gradient) plus one chunk of logits; the naive path grows by batch x length x V.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

HIDDEN, LAYERS, N, PROMPT, RESP = 256, 4, 32, 64, 32


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        import os

        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(vocab: int, mode: str, chunk: int) -> dict:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from rlsd.algo import ppo_clip_loss, token_logprobs_from_hidden, token_logprobs_from_logits
    from rlsd.train.forward import ResponseIndex, output_head, response_hidden_plain

    torch.manual_seed(0)
    torch.set_num_threads(2)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=HIDDEN,
        intermediate_size=4 * HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, vocab, (PROMPT,), generator=g).tolist() for _ in range(N)]
    responses = [torch.randint(0, vocab, (RESP,), generator=g).tolist() for _ in range(N)]
    idx = ResponseIndex.build(responses)
    adv = torch.randn(N)

    def update() -> None:
        opt.zero_grad(set_to_none=True)
        hidden = response_hidden_plain(model, prompts, responses, 0)
        weight, bias = output_head(model)
        if mode == "chunked":
            lp, _ = token_logprobs_from_hidden(hidden, weight, idx.targets, bias, 1.0, chunk)
        else:
            logits = torch.nn.functional.linear(hidden, weight)  # [M, V] at once
            lp = token_logprobs_from_logits(logits, idx.targets, 1.0, chunk_size=10**9)
        mat = idx.scatter(lp)
        loss, _ = ppo_clip_loss(mat, mat.detach(), adv[:, None] * idx.mask, idx.mask)
        loss.backward()
        opt.step()

    update()
    peak, stop = [_rss_bytes()], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.002)

    base = _rss_bytes()
    t = threading.Thread(target=sample)
    t.start()
    t0 = time.perf_counter()
    update()
    seconds = time.perf_counter() - t0
    stop.set()
    t.join()
    return {
        "vocab": vocab,
        "mode": mode,
        "step_peak_mb": (peak[0] - base) / 2**20,
        "rss_mb": peak[0] / 2**20,
        "seconds": seconds,
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--vocab", type=int, nargs="+", default=[32768, 131072])
    ap.add_argument("--chunk", type=int, default=256)
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(int(args.child[0]), args.child[1], args.chunk)))
        return
    from _machine import describe
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]machine[/bold] {describe()}")
    console.print(
        f"model hidden {HIDDEN}, {LAYERS} layers; batch {N} x ({PROMPT} prompt + {RESP} "
        f"response) tokens = {N * RESP} scored tokens; chunk {args.chunk} tokens"
    )
    rows = []
    for vocab in args.vocab:
        for mode in ("chunked", "naive"):
            out = subprocess.run(
                [sys.executable, __file__, "--chunk", str(args.chunk), "--child", str(vocab), mode],
                capture_output=True,
                text=True,
                check=True,
            )
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    table = Table(title="peak RSS above the pre-step RSS during one update")
    for col in ("vocab", "path", "step peak MB", "process peak RSS MB", "update s"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            str(r["vocab"]),
            r["mode"],
            f"{r['step_peak_mb']:.0f}",
            f"{r['rss_mb']:.0f}",
            f"{r['seconds']:.2f}",
        )
    console.print(table)
    lo, hi = min(args.vocab), max(args.vocab)
    dv = hi - lo
    by = {(r["vocab"], r["mode"]): r["step_peak_mb"] for r in rows}
    param_mb = dv * HIDDEN * 4 / 2**20  # the head's gradient (tied: one V x H tensor)
    chunk_mb = args.chunk * dv * 4 / 2**20
    logits_mb = N * RESP * dv * 4 / 2**20
    console.print(
        f"growth {lo} -> {hi}: chunked {by[(hi, 'chunked')] - by[(lo, 'chunked')]:+.0f} MB, "
        f"naive {by[(hi, 'naive')] - by[(lo, 'naive')]:+.0f} MB"
    )
    console.print(
        f"expected: parameter-sized V x H gradient {param_mb:.0f} MB + a few chunk-sized "
        f"buffers ({chunk_mb:.0f} MB each) for the chunked path; the naive path adds "
        f"several [M, V] tensors ({logits_mb:.0f} MB each)"
    )


if __name__ == "__main__":
    main()
