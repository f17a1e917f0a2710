"""The embedded demo: a SQLite store shaped like an enterprise's internal store, and the
sources that read it.

:mod:`rlsd.demo.store` builds the store (with :mod:`rlsd.demo.sql`, text-to-SQL over Chinook,
and :mod:`rlsd.demo.documents`, JSON extraction from business documents); ``DEMO_SOURCES``
declares the sources over it, whose URLs read the store's path from ``${RLSD_DEMO_STORE}``;
:func:`demo_sources` makes sure the store exists and says what to fill that reference with.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from rlsd.demo.store import build_demo_store

log = logging.getLogger(__name__)

#: Sources over the demo store; their URLs refer to the store as ``${RLSD_DEMO_STORE}``.
DEMO_SOURCES = Path(__file__).with_name("demo_sources.yaml")
#: The variable the demo sources' URLs read the store's path from.
DEMO_STORE_VAR = "RLSD_DEMO_STORE"


class DemoStoreMissingError(FileNotFoundError):
    """The demo store does not exist and was not to be built."""


class DemoSources(BaseModel):
    """The demo sources file and the variables that point its URLs at one store: pass both to
    :func:`rlsd.context.ingest.ingest` (``ingest(d.path, variables=d.variables)``)."""

    model_config = ConfigDict(frozen=True)

    path: Path
    store: Path
    variables: dict[str, str]


def demo_sources(store: Path | str, *, build: bool) -> DemoSources:
    """The demo sources over ``store``, building the store first when it is missing and
    ``build`` is set (else :class:`DemoStoreMissingError`).

    The store reaches the sources through ``variables``, not the environment, so nothing else
    in the process (another ingestion, a worker's own sources) sees it.
    """
    store = Path(store)
    if not store.exists():
        if not build:
            raise DemoStoreMissingError(
                f"no demo store at {store}: run `rlsd demo-store {store}` first "
                "(or pass your own sources)"
            )
        log.info("building the demo store at %s", store)
        build_demo_store(store)
    resolved = store.resolve()
    return DemoSources(path=DEMO_SOURCES, store=resolved, variables={DEMO_STORE_VAR: str(resolved)})


__all__ = [
    "DEMO_SOURCES",
    "DEMO_STORE_VAR",
    "DemoSources",
    "DemoStoreMissingError",
    "build_demo_store",
    "demo_sources",
]
