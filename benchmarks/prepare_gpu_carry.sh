#!/usr/bin/env bash
# Build .gpucarry for benchmarks/run_gpu_checks.sh on a lent GPU machine, which has torch and
# transformers but none of this project's other packages and no network: the wheels of what
# the trainer imports beyond those (the versions .venv holds, for Python 3.11 on x86_64), the
# bundled model's tokenizer, and a tiny Qwen2-VL folder. Pass it to the device run with
# carry: [".gpucarry"] (gitignored; about 10 MB). vLLM is not carried: its wheel is too large.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
rm -rf .gpucarry && mkdir -p .gpucarry/whl
pins=$($PY - <<'PYEOF'
from importlib.metadata import version
names = ["accelerate", "pydantic", "pydantic-core", "annotated-types", "typing-inspection",
         "rich", "markdown-it-py", "mdurl", "pygments", "typer", "click", "shellingham",
         "pyyaml", "safetensors", "num2words", "psutil"]
print(" ".join(f"{n}=={version(n)}" for n in names))
PYEOF
)
$PY -m pip download -q --no-deps --only-binary=:all: -d .gpucarry/whl $pins
# docopt ships only an sdist: build its wheel here
$PY -m pip wheel -q --no-deps -w .gpucarry/whl "docopt==$($PY -c 'from importlib.metadata import version; print(version("docopt"))')" 2>/dev/null || true
$PY - <<'PYEOF'
from pathlib import Path

from rlsd.models import load_policy
from tests.helpers.tiny_vlm import make_tiny_vlm

policy = load_policy()  # the bundled SmolLM2 (its tokenizer is the one the checks use)
policy.tokenizer.save_pretrained(".gpucarry/tok")
make_tiny_vlm("qwen2_vl", Path(".gpucarry/vlm"))
print("carry:", sorted(p.name for p in Path(".gpucarry").iterdir()))
PYEOF
du -sh .gpucarry
