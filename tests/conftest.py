"""Shared test configuration: strict dtype promotion, a deterministic hypothesis profile, and
one JAX compilation cache for the whole run."""

from __future__ import annotations

import os
import shutil
import tempfile

import jax
import pytest
from hypothesis import HealthCheck, settings

# Every implicit dtype promotion is an error in the tests: mixed-precision code must say what it
# means (a float32 carry with bfloat16 compute, say) instead of relying on promotion rules.
jax.config.update("jax_numpy_dtype_promotion", "strict")

# Deterministic, small property tests: every new shape recompiles, so keep the example count low.
settings.register_profile(
    "seqjax",
    derandomize=True,
    deadline=None,
    max_examples=int(os.environ.get("SEQJAX_HYPOTHESIS_EXAMPLES", "12")),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.load_profile("seqjax")

_CACHE_ENV = "SEQJAX_TEST_JAX_CACHE"


def pytest_configure(config):
    """Turns on JAX's persistent compilation cache in a fresh directory for this run.

    Many tests compile the same program from a new Python closure (a command run, then resumed
    by a second run; the same tiny model in several files), which JAX's in-memory caches do not
    share. The directory is made by the process that starts pytest and handed to the xdist
    workers through the environment, so workers share it; it is removed at the end of the run.
    Every run starts empty, so each distinct program is still compiled (and checked) once per
    run. This process and its xdist workers use it, and so do the training subprocesses of
    ``tests/_train_helpers.py``, which pass the same three settings on through ``JAX_*``
    environment variables (keep the two places alike).
    """
    if not os.environ.get(_CACHE_ENV):
        os.environ[_CACHE_ENV] = tempfile.mkdtemp(prefix="seqjax-jax-cache-")
        config._seqjax_jax_cache_owner = True
    jax.config.update("jax_compilation_cache_dir", os.environ[_CACHE_ENV])
    # Programs that compile quickly are cheaper to compile again than to store.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    # A size limit turns on JAX's file lock around reads and writes, which the xdist workers
    # (separate processes writing the same directory) need.
    jax.config.update("jax_compilation_cache_max_size", 2**31)


# The test files that take longest, longest first (seconds alone on 2 loaded cores, measured
# when this list was written). With ``--dist loadfile --no-loadscope-reorder`` (pyproject.toml)
# xdist hands whole files to the workers in collection order; starting with the long ones
# leaves the short ones to fill in at the end, instead of one worker finishing a long file
# alone. Files not listed run after these, in their usual order.
_LONGEST_FIRST = (
    "test_multiprocess.py",  # ~85 s
    "test_kernels.py",  # ~95 s
    "test_min_rnn.py",  # ~85 s
    "test_docstrings.py",  # ~75 s
    "test_long_range.py",  # ~70 s
    "test_flax.py",  # ~65 s
    "test_scan.py",  # ~65 s
    "test_doc_blocks.py",  # ~63 s
    "test_handwriting.py",
    "test_caption.py",  # ~58 s
    "test_char_lm.py",  # ~57 s
    "test_benchmark_smoke.py",  # ~54 s
    "test_cells.py",  # ~50 s
    "test_translate.py",  # ~50 s
    "test_speech.py",
    "test_xlstm.py",  # ~41 s
    "test_regularization.py",  # ~35 s
    "test_ctc.py",  # ~33 s
    "test_attention.py",  # ~31 s
    "test_interop.py",  # ~30 s
    "test_music.py",  # ~28 s
    "test_train_sharding.py",  # ~25 s
    "test_train_loop.py",  # ~20 s
    "test_combinators.py",  # ~17 s
)


def pytest_collection_modifyitems(config, items):
    """Orders the files longest first (see ``_LONGEST_FIRST``); a file's tests stay together
    and in their order."""
    rank = {name: i for i, name in enumerate(_LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def pytest_unconfigure(config):
    if getattr(config, "_seqjax_jax_cache_owner", False):
        shutil.rmtree(os.environ.pop(_CACHE_ENV), ignore_errors=True)


@pytest.fixture
def x64():
    """Runs a test with 64-bit floats enabled (references compared at 1e-6 and tighter)."""
    with jax.enable_x64(True):
        yield


@pytest.fixture(scope="session")
def train_reference_run(tmp_path_factory):
    """An uninterrupted 12-step run of the tiny LM task of ``tests/_train_worker.py``.

    Saves at steps 3, 6, 9, 12. Shared by the ``test_train_*`` files (one run per session);
    tests copy the directory before changing anything in it.

    Returns:
      ``(workdir, TrainResult, flat final parameters)``.
    """
    import _train_worker as tw

    workdir = str(tmp_path_factory.mktemp("reference") / "run")
    result = tw.run(tw.TinyConfig(), workdir)
    return workdir, result, tw.flat_params(result.state.params)
