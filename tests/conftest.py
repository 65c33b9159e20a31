"""Shared test configuration: strict dtype promotion, a deterministic hypothesis profile."""

from __future__ import annotations

import os

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
