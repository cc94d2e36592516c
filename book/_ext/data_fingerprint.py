"""Re-execute the chapters when the data changes, not only when their code does.

myst-nb's execution cache (jupyter-cache) keys a notebook by its code alone, and Sphinx
re-reads only the pages whose source changed: after a build on one MNIST, a build on
another would serve the first one's numbers. This extension stamps the cache with the
content fingerprint of the MNIST the build reads (:func:`companion.data.fingerprint`).
When the fingerprint differs from the stamp, it empties the execution cache and marks
every page outdated, so every chapter runs again on the new data; the new stamp is
written when the build succeeds.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.util import logging

logger = logging.getLogger(__name__)
STAMP = "data-fingerprint"


def _cache_dir(app: Sphinx) -> Path:
    configured = app.config[
        "nb_execution_cache_path"
    ]  # myst-nb's option; empty: its default
    return (
        Path(configured) if configured else Path(app.outdir).parent / ".jupyter_cache"
    )


def _fingerprint() -> str:
    from companion.data import DataUnavailableError, fingerprint

    try:
        return fingerprint()
    except DataUnavailableError:
        return "no-data"  # the chapters themselves say what is missing


def _on_builder_inited(app: Sphinx) -> None:
    cache, current = _cache_dir(app), _fingerprint()
    stamp = cache / STAMP
    previous = stamp.read_text().strip() if stamp.is_file() else None
    app.data_fingerprint = current
    app.data_changed = previous != current
    if app.data_changed and cache.exists():
        logger.info(
            f"data fingerprint {previous} → {current}: emptying {cache}, "
            "re-executing every page"
        )
        shutil.rmtree(cache)


def _on_env_get_outdated(app: Sphinx, env, added, changed, removed) -> list[str]:
    return sorted(env.found_docs) if getattr(app, "data_changed", False) else []


def _on_build_finished(app: Sphinx, exception: Exception | None) -> None:
    cache = _cache_dir(app)
    if exception is None and cache.exists():
        (cache / STAMP).write_text(app.data_fingerprint + "\n")


def setup(app: Sphinx) -> dict:
    app.connect(
        "builder-inited", _on_builder_inited, priority=100
    )  # before myst-nb opens the cache
    app.connect("env-get-outdated", _on_env_get_outdated)
    app.connect("build-finished", _on_build_finished)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
