r"""Minimal RNNs (Feng et al. 2024, "Were RNNs All We Needed?"): minGRU and minLSTM.

Their gates depend on the input alone, so the recurrence is linear in the state,
``h_t = a_t * h_{t-1} + b_t`` with ``a_t, b_t`` computed from ``x_t`` only. That allows a
parallel form over time (a prefix scan of the affine maps, O(log T) depth), which
``seqjax/kernels/parallel.py`` registers as the kernel ``"parallel"``; :meth:`MinGRU.step` and
:meth:`MinLSTM.step` are the sequential reference.

Both cells use the authors' log-space ("stable") parameterisation: the candidate state is made
positive by ``g(x) = x + 0.5`` for ``x >= 0`` and ``sigmoid(x)`` otherwise, so that ``log a_t`` and
``log b_t`` exist and the parallel scan can run in log space. :meth:`log_coefficients` returns
them; the step uses the same quantities in linear space.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from seqjax import _checks
from seqjax.cells.base import Cell, affine, concat_init, glorot_uniform, sigmoid
from seqjax.typing import Array, DType, PRNGKey, Shape

Initializer = Callable[..., Array]


def _g(x: Array) -> Array:
    """The authors' positive activation: ``x + 0.5`` for ``x >= 0``, ``sigmoid(x)`` below.

    Continuous (both branches give 0.5 at 0) and positive everywhere, which the log-space scan
    needs; its slope jumps from 0.25 to 1 at 0.
    """
    return jnp.where(x >= 0, jax.nn.relu(x) + 0.5, sigmoid(jnp.minimum(x, 0.0)))


def _log_g(x: Array) -> Array:
    """``log g(x)`` computed without overflow: ``log(x + 0.5)`` or ``-softplus(-x)``."""
    return jnp.where(x >= 0, jnp.log(jax.nn.relu(x) + 0.5), -jax.nn.softplus(-jnp.minimum(x, 0.0)))


class MinGRUParams(NamedTuple):
    """Parameters of :class:`MinGRU`, blocks in order ``z, h~``.

    Attributes:
      w: input weights ``[I, 2H]``.
      b: bias ``[2H]``, or None.
    """

    w: Array
    b: Array | None = None


class MinGRUCarry(NamedTuple):
    """Carry of :class:`MinGRU`: the hidden state ``h [*B, H]``."""

    h: Array


class MinLSTMParams(NamedTuple):
    """Parameters of :class:`MinLSTM`, blocks in order ``f, i, h~``.

    Attributes:
      w: input weights ``[I, 3H]``.
      b: bias ``[3H]``, or None.
    """

    w: Array
    b: Array | None = None


class MinLSTMCarry(NamedTuple):
    """Carry of :class:`MinLSTM`: the hidden state ``h [*B, H]`` (there is no cell state)."""

    h: Array


@dataclasses.dataclass(frozen=True)
class _MinRNN(Cell):
    """What minGRU and minLSTM share: one input projection, a linear recurrence."""

    hidden_size: int
    use_bias: bool = True
    dtype: DType | None = None
    param_dtype: DType = jnp.float32
    kernel_init: Initializer = dataclasses.field(default=glorot_uniform, repr=False)

    _blocks = 0  # gate blocks of the input projection (a class constant, not a field)

    def __post_init__(self):
        name = type(self).__name__
        _checks.positive_int(f"{name}.hidden_size", self.hidden_size)
        if not isinstance(self.use_bias, bool):
            raise TypeError(f"{name}.use_bias must be a bool, got {self.use_bias!r}")

    @property
    def output_size(self) -> int:
        return self.hidden_size

    def init(self, key: PRNGKey, input_size: int):
        """Creates parameters for ``input_size`` input features (zero biases)."""
        _checks.positive_int("input_size", input_size)
        H, pdt, n = self.hidden_size, self.param_dtype, self._blocks
        fields = dict(w=concat_init(self.kernel_init, key, (input_size, H), n, pdt))
        if self.use_bias:
            fields["b"] = jnp.zeros((n * H,), pdt)
        return self._params_type(**fields)

    @property
    def _params_type(self) -> type:
        raise NotImplementedError

    def input_size_of(self, params) -> int:
        return params.w.shape[0]

    def project_inputs(self, params, xs: Array) -> Array:
        """``W x + b``: ``[..., I] -> [..., nH]`` (all gates; nothing else depends on x)."""
        return affine(xs, params.w, params.b, self.dtype)

    def coefficients(self, xp: Array) -> tuple[Array, Array]:
        """``(a, b)`` of ``h_t = a * h_{t-1} + b`` from the projected input, ``[..., H]`` each."""
        raise NotImplementedError

    def log_coefficients(self, xp: Array) -> tuple[Array, Array]:
        """``(log a, log b)`` from the projected input ``[..., nH]``, each ``[..., H]``.

        Both are finite for finite inputs (``a, b > 0``); the parallel kernel scans them.
        """
        raise NotImplementedError

    def step(self, params, carry, xp: Array):
        """One step from the projected input ``xp``; returns ``(carry, h)``."""
        del params
        a, b = self.coefficients(xp)
        h = (a * carry.h.astype(xp.dtype) + b).astype(carry.h.dtype)
        return type(carry)(h=h), h


@dataclasses.dataclass(frozen=True)
class MinGRU(_MinRNN):
    r"""Minimal GRU (Feng et al. 2024): the update gate and candidate see the input only.

    .. math::

        z_t &= \sigma(W_z x_t + b_z) \\
        \tilde h_t &= g(W_h x_t + b_h), \quad
            g(v) = \begin{cases} v + \tfrac12 & v \ge 0 \\ \sigma(v) & v < 0 \end{cases} \\
        h_t &= (1 - z_t) \odot h_{t-1} + z_t \odot \tilde h_t

    This is the paper's log-space ("stable") version: ``g`` keeps ``\tilde h_t`` positive so
    that the parallel form can scan ``log(1 - z_t) = -softplus(k_t)`` and
    ``log(z_t \tilde h_t) = -softplus(-k_t) + log g(\cdot)`` with ``k_t = W_z x_t + b_z``
    (the initial carry may have any sign: it enters linearly). The output is ``h_t``.

    ``seqjax.scan(cell, params, xs, impl="parallel")`` runs the associative scan,
    ``impl="reference"`` the step-by-step loop (see ``seqjax/kernels/parallel.py`` for the
    ``"auto"`` rule).

    Options: ``hidden_size=H``; ``use_bias``; ``dtype``: matmul dtype (None: the parameters');
    ``param_dtype``; ``kernel_init``: initializer of each ``[I, H]`` block (Glorot-uniform).

    Shapes: ``x [*B, I]`` gives ``y [*B, H]``; the carry is :class:`MinGRUCarry` ``h [*B, H]``;
    the parameters are :class:`MinGRUParams` ``w [I, 2H]``, ``b [2H]``, blocks ``z, h~``.

    Example:
      >>> import jax, jax.numpy as jnp, seqjax
      >>> cell = seqjax.MinGRU(hidden_size=4)
      >>> params = cell.init(jax.random.key(0), input_size=3)
      >>> xs = jnp.ones((2, 7, 3))
      >>> _, ys = seqjax.scan(cell, params, xs, impl="parallel")
      >>> _, ys_ref = seqjax.scan(cell, params, xs, impl="reference")
      >>> ys.shape, bool(jnp.allclose(ys, ys_ref, atol=1e-5))
      ((2, 7, 4), True)
    """

    _blocks = 2

    @property
    def _params_type(self) -> type:
        return MinGRUParams

    def init(self, key: PRNGKey, input_size: int) -> MinGRUParams:
        """Creates :class:`MinGRUParams` for ``input_size`` input features (zero biases)."""
        return super().init(key, input_size)

    def initial_carry(self, batch_shape: Shape = (), dtype: DType = jnp.float32) -> MinGRUCarry:
        """Zeros: ``MinGRUCarry(h [*B, H])``."""
        return MinGRUCarry(h=jnp.zeros(tuple(batch_shape) + (self.hidden_size,), dtype))

    def coefficients(self, xp: Array) -> tuple[Array, Array]:
        """``(1 - z, z * h~)`` from ``xp [..., 2H]``."""
        H = self.hidden_size
        z = sigmoid(xp[..., :H])
        return 1.0 - z, z * _g(xp[..., H:])

    def log_coefficients(self, xp: Array) -> tuple[Array, Array]:
        """``(log(1 - z), log z + log h~)`` from ``xp [..., 2H]``."""
        H = self.hidden_size
        k = xp[..., :H]
        return -jax.nn.softplus(k), -jax.nn.softplus(-k) + _log_g(xp[..., H:])


@dataclasses.dataclass(frozen=True)
class MinLSTM(_MinRNN):
    r"""Minimal LSTM (Feng et al. 2024): forget and input gates see the input only, normalised.

    .. math::

        f_t &= \sigma(W_f x_t + b_f), \quad i_t = \sigma(W_i x_t + b_i) \\
        f'_t &= \frac{f_t}{f_t + i_t}, \quad i'_t = \frac{i_t}{f_t + i_t} \\
        \tilde h_t &= g(W_h x_t + b_h) \\
        h_t &= f'_t \odot h_{t-1} + i'_t \odot \tilde h_t

    with ``g`` as in :class:`MinGRU` (the paper's log-space, "stable" version; the
    normalisation makes the state time-independent in scale). In log space
    ``log f'_t = -softplus(d_t)`` and ``log i'_t = -softplus(-d_t)`` with
    ``d_t = log i_t - log f_t = softplus(-k^f_t) - softplus(-k^i_t)``. The output is ``h_t``.

    ``seqjax.scan(cell, params, xs, impl="parallel")`` runs the associative scan,
    ``impl="reference"`` the step-by-step loop.

    Options: ``hidden_size=H``; ``use_bias``; ``dtype``: matmul dtype (None: the parameters');
    ``param_dtype``; ``kernel_init``: initializer of each ``[I, H]`` block (Glorot-uniform).

    Shapes: ``x [*B, I]`` gives ``y [*B, H]``; the carry is :class:`MinLSTMCarry` ``h [*B, H]``;
    the parameters are :class:`MinLSTMParams` ``w [I, 3H]``, ``b [3H]``, blocks ``f, i, h~``.

    Example:
      >>> import jax, jax.numpy as jnp, seqjax
      >>> cell = seqjax.MinLSTM(hidden_size=4)
      >>> params = cell.init(jax.random.key(0), input_size=3)
      >>> carry, y = cell(params, cell.initial_carry((5,)), jnp.ones((5, 3)))
      >>> y.shape
      (5, 4)
    """

    _blocks = 3

    @property
    def _params_type(self) -> type:
        return MinLSTMParams

    def init(self, key: PRNGKey, input_size: int) -> MinLSTMParams:
        """Creates :class:`MinLSTMParams` for ``input_size`` input features (zero biases)."""
        return super().init(key, input_size)

    def initial_carry(self, batch_shape: Shape = (), dtype: DType = jnp.float32) -> MinLSTMCarry:
        """Zeros: ``MinLSTMCarry(h [*B, H])``."""
        return MinLSTMCarry(h=jnp.zeros(tuple(batch_shape) + (self.hidden_size,), dtype))

    def _log_ratio(self, xp: Array) -> Array:
        """``d = log i - log f`` from ``xp [..., 3H]``."""
        H = self.hidden_size
        return jax.nn.softplus(-xp[..., :H]) - jax.nn.softplus(-xp[..., H : 2 * H])

    def coefficients(self, xp: Array) -> tuple[Array, Array]:
        """``(f', i' * h~)`` from ``xp [..., 3H]`` (``f' = sigmoid(-d)``, ``i' = sigmoid(d)``)."""
        d = self._log_ratio(xp)
        return sigmoid(-d), sigmoid(d) * _g(xp[..., 2 * self.hidden_size :])

    def log_coefficients(self, xp: Array) -> tuple[Array, Array]:
        """``(log f', log i' + log h~)`` from ``xp [..., 3H]``."""
        d = self._log_ratio(xp)
        return -jax.nn.softplus(d), -jax.nn.softplus(-d) + _log_g(xp[..., 2 * self.hidden_size :])
