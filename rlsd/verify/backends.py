"""Choosing a sandbox backend: Docker when an engine answers, else the local sandbox, by policy.

The backends (:mod:`rlsd.verify.docker_sandbox`, :mod:`rlsd.verify.local_sandbox`) build on
:mod:`rlsd.verify.sandbox`; this module sits above all three, so none imports another in a circle.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from rlsd.verify import engine
from rlsd.verify.docker_sandbox import DockerSandbox
from rlsd.verify.images import ImageError, build_base
from rlsd.verify.local_sandbox import LocalSandbox
from rlsd.verify.sandbox import Sandbox, SandboxUnavailable

log = logging.getLogger(__name__)

REQUIRE_DOCKER_ENV = "RLSD_REQUIRE_DOCKER"


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def require_docker_policy() -> bool:
    """The policy setting from the environment: ``RLSD_REQUIRE_DOCKER=1`` forbids the fallback."""
    return _truthy(os.environ.get(REQUIRE_DOCKER_ENV))


def make_sandbox(backend: str = "auto", require_docker: bool = False, **options: Any) -> Sandbox:
    """``auto``: Docker when an engine answers, else the local sandbox (unless Docker is required).

    ``require_docker`` (or ``RLSD_REQUIRE_DOCKER=1``) is the policy that forbids the local fallback:
    asking for ``local`` or reaching it from ``auto`` then raises :class:`SandboxUnavailable`.
    ``options`` go to the backend's constructor (``pull`` only to Docker's).
    """
    require_docker = require_docker or require_docker_policy()
    docker_only = {k: options.pop(k) for k in ("pull",) if k in options}
    if backend == "docker":
        return DockerSandbox(**options, **docker_only)
    if backend == "local":
        if require_docker:
            raise SandboxUnavailable(
                "the local sandbox was requested but the policy requires Docker (require_docker / "
                f"{REQUIRE_DOCKER_ENV}=1)"
            )
        return LocalSandbox(**options)
    if backend != "auto":
        raise ValueError(f"unknown sandbox backend {backend!r}: use docker, local or auto")
    reason = engine.docker_available()
    if reason is None:
        return DockerSandbox(**options, **docker_only)
    if require_docker:
        raise SandboxUnavailable(
            f"no Docker engine answers ({reason}) and the policy requires Docker (require_docker / "
            f"{REQUIRE_DOCKER_ENV}=1), so the local fallback is forbidden"
        )
    return LocalSandbox(**options)


def prepare_backend(backend: str, require_docker: bool) -> str:
    """Build the verifier base image once when an engine answers and it is missing.

    Returns the backend to use: a machine with an engine but no way to build the base image
    (no debootstrap) falls back to the local sandbox, loudly, unless Docker is required (or
    ``backend`` is ``docker``: then the :class:`ImageError` is raised). Without an engine the
    backend is returned as is and :func:`make_sandbox` decides (local, or an error).
    """
    if not engine.docker_answers(timeout=5):
        return backend
    try:
        build_base()
    except ImageError as exc:
        if require_docker or backend == "docker":
            raise
        log.warning("DOCKER ENGINE FOUND BUT THE BASE IMAGE CANNOT BE BUILT (%s): verifiers run "
                    "in the LOCAL sandbox", exc)  # fmt: skip
        return "local"
    return backend
