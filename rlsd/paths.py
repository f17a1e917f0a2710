"""Where the product's drop-in folders are when no path is given.

``verifiers/`` and ``policies/`` live beside the package in a checkout. Commands look in the
working directory first (a team's own checkout or deployment folder), then in the checkout the
package was installed from (editable installs, the README's quick start).
"""

from __future__ import annotations

import os
from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parents[1]


def resolve_default(relative: str | Path, env: str | None = None) -> Path:
    """``$env`` if set, else ``./relative`` if it exists, else the checkout's ``relative``."""
    if env and os.environ.get(env):
        return Path(os.environ[env])
    local = Path(relative)
    if local.exists():
        return local
    return _CHECKOUT / relative


def verifiers_root() -> Path:
    return resolve_default("verifiers", "RLSD_VERIFIERS_ROOT")


def policies_dir() -> Path:
    return resolve_default("policies", "RLSD_POLICIES_DIR")
