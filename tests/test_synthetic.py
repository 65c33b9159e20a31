"""The synthetic long-lag task generators: shapes, structure, statistics and baselines."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqjax.data.synthetic import (
    ADDING_BASELINE_MSE,
    COPY_BLANK,
    COPY_DELIMITER,
    adding_problem,
    copy_baseline_xent,
    copy_memory,
)


def test_adding_shapes_dtypes_and_determinism():
    b = adding_problem(jax.random.key(0), 4, 9)
    assert b.inputs.shape == (4, 9, 2) and b.targets.shape == (4,)
    assert b.inputs.dtype == jnp.float32 and b.targets.dtype == jnp.float32
    again = adding_problem(jax.random.key(0), 4, 9)
    np.testing.assert_array_equal(b.inputs, again.inputs)
    other = adding_problem(jax.random.key(1), 4, 9)
    assert not np.array_equal(b.inputs, other.inputs)
    b16 = adding_problem(jax.random.key(0), 2, 5, dtype=jnp.bfloat16)
    assert b16.inputs.dtype == jnp.bfloat16 and b16.targets.dtype == jnp.bfloat16


@pytest.mark.parametrize("length", [2, 3, 10, 51])
def test_adding_structure(length):
    b = adding_problem(jax.random.key(length), 256, length)
    x, y = np.asarray(b.inputs), np.asarray(b.targets)
    values, marks = x[..., 0], x[..., 1]
    assert ((values >= 0) & (values < 1)).all()
    assert set(np.unique(marks)) <= {0.0, 1.0}
    np.testing.assert_array_equal(marks.sum(1), 2)
    half = (length + 1) // 2
    pos = np.argwhere(marks == 1).reshape(256, 2, 2)[..., 1]  # [B, 2] sorted positions
    assert (pos[:, 0] < half).all() and (pos[:, 1] >= half).all()
    # The target is the sum of the two marked values (NumPy recomputation).
    expected = values[np.arange(256)[:, None], pos].sum(1)
    np.testing.assert_allclose(y, expected, rtol=1e-6)
    if length >= 10:  # both halves are covered by the marker positions
        assert len(np.unique(pos[:, 0])) == half and len(np.unique(pos[:, 1])) == length - half


def test_adding_baseline_mse_is_one_sixth():
    # Closed form: target = u1 + u2, u ~ U[0, 1): mean 1, variance 2/12 = 1/6.
    assert ADDING_BASELINE_MSE == pytest.approx(0.1667, abs=5e-5)
    y = np.asarray(adding_problem(jax.random.key(3), 40_000, 8).targets, np.float64)
    assert y.mean() == pytest.approx(1.0, abs=0.01)
    mse_of_mean = np.mean((y - 1.0) ** 2)
    # Standard error of the MSE estimate: sqrt(Var((y-1)^2)/n), about 0.0008 here.
    assert mse_of_mean == pytest.approx(ADDING_BASELINE_MSE, abs=0.004)


def test_copy_structure():
    T, K, B = 7, 10, 64
    b = copy_memory(jax.random.key(0), B, T)
    x, y = np.asarray(b.inputs), np.asarray(b.targets)
    assert x.shape == y.shape == (B, T + 2 * K) and x.dtype == y.dtype == np.int32
    assert ((x[:, :K] >= 1) & (x[:, :K] <= 8)).all()
    np.testing.assert_array_equal(x[:, K : K + T - 1], COPY_BLANK)
    np.testing.assert_array_equal(x[:, K + T - 1], COPY_DELIMITER)
    np.testing.assert_array_equal(x[:, K + T :], COPY_BLANK)
    np.testing.assert_array_equal(y[:, : T + K], COPY_BLANK)
    np.testing.assert_array_equal(y[:, T + K :], x[:, :K])
    np.testing.assert_array_equal(b.inputs, copy_memory(jax.random.key(0), B, T).inputs)
    # Other alphabet and copy length: delimiter is num_symbols + 1.
    s = copy_memory(jax.random.key(1), 3, 4, num_symbols=3, copy_length=2)
    assert s.inputs.shape == (3, 8) and (np.asarray(s.inputs)[:, 5] == 4).all()
    assert np.asarray(s.inputs)[:, :2].max() <= 3


def test_copy_symbols_are_uniform():
    x = np.asarray(copy_memory(jax.random.key(5), 4000, 3).inputs[:, :10]).ravel()
    freq = np.bincount(x, minlength=9)[1:] / x.size
    np.testing.assert_allclose(freq, 1 / 8, atol=0.006)  # 40k draws: SE about 0.0017


@pytest.mark.parametrize("delay", [1, 50, 100, 200])
def test_copy_baseline_matches_memoryless_predictor(delay):
    # Score the memoryless strategy directly: blank with probability 1 for T + K steps, then
    # uniform over the 8 symbols.
    b = copy_memory(jax.random.key(delay), 16, delay)
    y = np.asarray(b.targets)
    L = y.shape[1]
    probs = np.zeros((L, 10))
    probs[: delay + 10, COPY_BLANK] = 1.0
    probs[delay + 10 :, 1:9] = 1 / 8
    with np.errstate(divide="ignore"):
        nll = -np.log(probs[np.arange(L)[None, :], y])
    assert np.isfinite(nll).all()
    assert nll.mean() == pytest.approx(copy_baseline_xent(delay), rel=1e-12)
    assert copy_baseline_xent(delay) == pytest.approx(10 * math.log(8) / (delay + 20))


def test_copy_baseline_published_values():
    # Arjovsky et al. (2016), as quoted in DATA.md.
    for T, v in [(100, 0.1733), (200, 0.0945), (300, 0.0650), (500, 0.0400), (1000, 0.0204)]:
        assert round(copy_baseline_xent(T), 4) == v


def test_errors():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="batch_size"):
        adding_problem(key, 0, 5)
    with pytest.raises(ValueError, match="length must be >= 2"):
        adding_problem(key, 2, 1)
    with pytest.raises(TypeError, match="length must be an int"):
        adding_problem(key, 2, 5.0)
    with pytest.raises(TypeError, match="floating"):
        adding_problem(key, 2, 5, dtype=jnp.int32)
    with pytest.raises(ValueError, match="delay"):
        copy_memory(key, 2, 0)
    with pytest.raises(TypeError, match="copy_length"):
        copy_memory(key, 2, 3, copy_length=True)
    with pytest.raises(ValueError, match="num_symbols"):
        copy_baseline_xent(5, num_symbols=0)
