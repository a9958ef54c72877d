"""Opt-in persistent compilation cache (tsjax never changes JAX's configuration on import)."""

from __future__ import annotations

import os

import jax

__all__ = ["enable_compilation_cache"]


def enable_compilation_cache(path: str | os.PathLike | None = None) -> str:
    """Turn on JAX's persistent compilation cache in ``path`` (default
    ``$TSJAX_CACHE_DIR`` or ``~/.cache/tsjax/jax``) and return the folder.

    A compiled program (an ODE solve, a simulation, a sweep chunk) is then stored on disk and
    reused by later processes with the same shapes, options, JAX version and device, instead
    of being compiled again. Every program is cached, however quick its compilation (JAX's
    default threshold of 1 s would skip most of tsjax's small programs). Call it once, before
    the first computation; it changes JAX's global configuration (``jax_compilation_cache_dir``
    and the two ``jax_persistent_cache_min_*`` thresholds), which is why tsjax does not do it
    on import. The ``tsjax`` command line and the notebooks call it."""
    if path is None:
        path = os.environ.get("TSJAX_CACHE_DIR") or os.path.join(
            os.path.expanduser("~"), ".cache", "tsjax", "jax"
        )
    path = os.fspath(path)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise ValueError(f"path: cannot create the compilation cache folder {path!r}: {e}") from e
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path
