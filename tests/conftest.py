import os
import tempfile

import jax
import pytest

import tsjax

jax.config.update("jax_enable_x64", True)

# One persistent compilation cache for the whole run (a fresh folder unless TSJAX_CACHE_DIR is
# set), shared by the two workers (they inherit the variable) and the notebooks' kernels
# (tsjax.enable_compilation_cache reads it): a program compiled once, by any test or notebook,
# is loaded from disk by the others instead of being compiled again.
os.environ.setdefault("TSJAX_CACHE_DIR", tempfile.mkdtemp(prefix="tsjax-test-cache-"))
tsjax.enable_compilation_cache()


@pytest.fixture(autouse=True, scope="module")
def _fresh_compilation_caches():
    """Each test module starts without the previous modules' compiled programs: keeps the
    memory of a long single-process run flat (the suite compiles hundreds of programs)."""
    jax.clear_caches()
    yield


def pytest_collection_modifyitems(config, items):
    """The notebooks (the longest tests, 15-80 s each) first: the two workers then end on
    short tests instead of one waiting for the other's last notebook."""
    items.sort(key=lambda item: "test_notebooks" not in item.nodeid)
