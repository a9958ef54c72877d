import jax
import pytest

jax.config.update("jax_enable_x64", True)


@pytest.fixture(autouse=True, scope="module")
def _fresh_compilation_caches():
    """Each test module starts without the previous modules' compiled programs: keeps the
    memory of a long single-process run flat (the suite compiles hundreds of programs)."""
    jax.clear_caches()
    yield
