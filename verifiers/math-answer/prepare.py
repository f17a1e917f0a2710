"""Copy the one shared implementation of the math-answer checker into build/.

``rlsd/verify/answer_extraction.py`` (standard library only) is what the in-process checker runs;
the container runs a verbatim copy of it. Run from anywhere with any Python 3.11.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODULE = "answer_extraction.py"


def source() -> Path:
    in_repo = HERE.parents[1] / "rlsd" / "verify" / MODULE
    if in_repo.is_file():
        return in_repo
    spec = importlib.util.find_spec("rlsd")  # does not import rlsd
    if spec is not None and spec.submodule_search_locations:
        installed = Path(next(iter(spec.submodule_search_locations))) / "verify" / MODULE
        if installed.is_file():
            return installed
    raise SystemExit(f"prepare: cannot find rlsd/verify/{MODULE} (looked in {in_repo})")


def main() -> int:
    src = source()
    build = HERE / "build"
    build.mkdir(exist_ok=True)
    dest = build / MODULE
    tmp = build / (MODULE + ".tmp")
    shutil.copyfile(src, tmp)
    tmp.chmod(0o644)
    tmp.replace(dest)
    shutil.rmtree(build / "__pycache__", ignore_errors=True)  # never ship stale bytecode
    print(f"prepare: copied {src} -> {dest}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
