#!/usr/bin/env bash
# The GPU checks of issues 6 and 7, as one prepared run on a lent GPU machine (which has torch,
# but not this project's pinned Python packages): install the carried wheels into /tmp/site,
# then a random Qwen2-VL-2B-sized VLM with images and a random Qwen2.5-1.5B-sized text model,
# GRPO and RLSD steps in bf16 each. Carry: .gpucarry (wheels, tokenizer, tiny Qwen2-VL folder).
set -euo pipefail
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
python -m pip install -q --no-index --no-deps --target /tmp/site .gpucarry/whl/*.whl 2>&1 | tail -2
export PYTHONPATH=/tmp/site:$PWD RLSD_NO_PROGRESS=1 TOKENIZERS_PARALLELISM=false
python -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, torch.cuda.get_device_name())"
python benchmarks/gpu_vlm_step.py --model-dir .gpucarry/vlm --steps 2 --prompts 8 --group 8 \
  --max-new-tokens 64 2>&1 | grep -v "Loading weights\|Writing model" | tee "$OUT/vlm.txt"
python benchmarks/gpu_step.py --tokenizer .gpucarry/tok --arch qwen2.5-1.5b --steps 2 \
  --prompts 8 --group 8 --max-new-tokens 128 2>&1 | grep -v "Loading weights\|Writing model" \
  | tee "$OUT/text.txt"
