"""The Docker engine, as the verifier sandboxes reach it: one client factory, one ping.

The ``docker`` package is imported here lazily, so a machine without it (or without an engine)
can still import every verify module and use the local sandbox.
"""

from __future__ import annotations

from typing import Any


def docker_client(timeout: float = 120, max_pool_size: int = 16) -> Any:
    """A client of the engine the environment names (``DOCKER_HOST``, else the local socket);
    not pinged: the first call fails when nothing answers."""
    import docker

    return docker.from_env(timeout=int(max(1, timeout)), max_pool_size=max_pool_size)


def docker_available(timeout: float = 3.0) -> str | None:
    """None when a Docker engine answers a ping within ``timeout``, else why not (one line)."""
    try:
        import docker  # noqa: F401 - only to say so when the package is missing
    except ImportError:
        return "the docker Python package is not installed"
    try:
        client = docker_client(timeout)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:  # any failure means: no usable engine
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
    return None


def docker_answers(timeout: float = 3.0) -> bool:
    """Whether a Docker engine answers a ping (see :func:`docker_available` for the reason)."""
    return docker_available(timeout) is None
