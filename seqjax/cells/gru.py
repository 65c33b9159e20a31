"""The gated recurrent unit (Cho et al. 2014), classic and cuDNN ("reset after") forms."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from seqjax import _checks
from seqjax.cells.base import (
    Cell,
    affine,
    concat_init,
    glorot_uniform,
    matmul,
    orthogonal,
    sigmoid,
)
from seqjax.typing import Array, DType, PRNGKey, Shape

Initializer = Callable[..., Array]


class GRUParams(NamedTuple):
    """Parameters of :class:`GRU`, gate blocks fused in order ``r, z, n`` (PyTorch's order).

    Attributes:
      w_ih: input weights ``[I, 3H]``.
      w_hh: recurrent weights ``[H, 3H]``.
      b: bias ``[3H]`` (for ``r`` and ``z`` the sum of input and recurrent biases), or None.
      b_hn: recurrent bias of the candidate ``[H]``, inside the reset product; only with
        ``reset_after=True`` and ``use_bias=True``.
    """

    w_ih: Array
    w_hh: Array
    b: Array | None = None
    b_hn: Array | None = None


class GRUCarry(NamedTuple):
    """Carry of :class:`GRU`: the hidden state ``h [*B, H]``."""

    h: Array


@dataclasses.dataclass(frozen=True)
class GRU(Cell):
    r"""Gated recurrent unit (Cho et al. 2014).

    .. math::

        r_t &= \sigma(W_r x_t + U_r h_{t-1} + b_r) \\
        z_t &= \sigma(W_z x_t + U_z h_{t-1} + b_z) \\
        \tilde h_t &= \tanh(W_n x_t + b_n + U_n (r_t \odot h_{t-1}))
            &&\text{(classic, reset before)} \\
        \tilde h_t &= \tanh(W_n x_t + b_n + r_t \odot (U_n h_{t-1} + b_{hn}))
            &&\text{(reset_after=True: cuDNN, PyTorch, Keras)} \\
        h_t &= (1 - z_t) \odot h_{t-1} + z_t \odot \tilde h_t

    Here ``z_t`` is the share of the *new* candidate (Chung et al. 2014); PyTorch, Keras and
    Flax use ``z' = 1 - z``, so importing their weights negates the ``z`` blocks (an exact
    conversion, :func:`seqjax.interop.from_torch` does it).

    Options:

    - ``hidden_size=H``.
    - ``reset_after=True``: the cuDNN/PyTorch/Keras form, one recurrent matmul per step instead
      of two (the classic form must know ``r_t`` before applying ``U_n``), and a bias ``b_hn``.
    - ``use_bias``; ``dtype``: matmul dtype (None: the parameters'); ``param_dtype``;
      ``kernel_init``, ``recurrent_init``: initializers of each gate block (default
      Glorot-uniform and orthogonal; biases start at zero).

    Shapes: ``x [*B, I]`` gives ``y [*B, H]``; the carry is :class:`GRUCarry` ``h [*B, H]``;
    the parameters are :class:`GRUParams` ``w_ih [I, 3H]``, ``w_hh [H, 3H]``, ``b [3H]``
    (and ``b_hn [H]`` with ``reset_after``), gate blocks in order ``r, z, n``.
    ``docs/cells.md`` has the PyTorch, Keras and Flax parameter mappings.

    Example:
      >>> import jax, jax.numpy as jnp, seqjax
      >>> cell = seqjax.GRU(hidden_size=4)
      >>> params = cell.init(jax.random.key(0), input_size=3)
      >>> carry, y = cell(params, cell.initial_carry((5,)), jnp.ones((5, 3)))
      >>> y.shape
      (5, 4)
    """

    hidden_size: int
    reset_after: bool = False
    use_bias: bool = True
    dtype: DType | None = None
    param_dtype: DType = jnp.float32
    kernel_init: Initializer = dataclasses.field(default=glorot_uniform, repr=False)
    recurrent_init: Initializer = dataclasses.field(default=orthogonal, repr=False)

    def __post_init__(self):
        _checks.positive_int("GRU.hidden_size", self.hidden_size)
        for flag in ("reset_after", "use_bias"):
            if not isinstance(getattr(self, flag), bool):
                raise TypeError(f"GRU.{flag} must be a bool, got {getattr(self, flag)!r}")

    @property
    def output_size(self) -> int:
        return self.hidden_size

    def init(self, key: PRNGKey, input_size: int) -> GRUParams:
        """Creates :class:`GRUParams` for ``input_size`` input features."""
        _checks.positive_int("input_size", input_size)
        H, pdt = self.hidden_size, self.param_dtype
        k_ih, k_hh = jax.random.split(key)
        fields = dict(
            w_ih=concat_init(self.kernel_init, k_ih, (input_size, H), 3, pdt),
            w_hh=concat_init(self.recurrent_init, k_hh, (H, H), 3, pdt),
        )
        if self.use_bias:
            fields["b"] = jnp.zeros((3 * H,), pdt)
            if self.reset_after:
                fields["b_hn"] = jnp.zeros((H,), pdt)
        return GRUParams(**fields)

    def initial_carry(self, batch_shape: Shape = (), dtype: DType = jnp.float32) -> GRUCarry:
        """Zeros: ``GRUCarry(h [*B, H])``."""
        return GRUCarry(h=jnp.zeros(tuple(batch_shape) + (self.hidden_size,), dtype))

    def input_size_of(self, params: GRUParams) -> int:
        return params.w_ih.shape[0]

    def project_inputs(self, params: GRUParams, xs: Array) -> Array:
        """``W x + b``: ``[..., I] -> [..., 3H]``."""
        return affine(xs, params.w_ih, params.b, self.dtype)

    def step(self, params: GRUParams, carry: GRUCarry, xp: Array) -> tuple[GRUCarry, Array]:
        """One GRU step from the projected input ``xp [*B, 3H]``; returns ``(carry, h)``."""
        H = self.hidden_size
        acc = xp.dtype
        h_prev = carry.h.astype(acc)
        if self.reset_after:
            rec = matmul(carry.h, params.w_hh, self.dtype, acc)
            rec_n = rec[..., 2 * H :]
            if params.b_hn is not None:
                rec_n = rec_n + params.b_hn.astype(acc)
            h, _, _ = gru_update(xp, rec[..., : 2 * H], h_prev, lambda r: r * rec_n)
        else:
            rec_rz = matmul(carry.h, params.w_hh[:, : 2 * H], self.dtype, acc)
            w_n = params.w_hh[:, 2 * H :]
            h, _, _ = gru_update(
                xp, rec_rz, h_prev, lambda r: matmul(r * h_prev, w_n, self.dtype, acc)
            )
        h = h.astype(carry.h.dtype)
        return GRUCarry(h=h), h


def gru_update(
    xp: Array, rec_rz: Array, h_prev: Array, candidate_recurrence: Callable[[Array], Array]
) -> tuple[Array, Array, Array]:
    """The gate equations of a GRU step given its matmuls (shared by :meth:`GRU.step` and the
    fused kernel in ``seqjax/kernels/fused_specs.py``).

    Args:
      xp: projected input ``[..., 3H]`` (blocks ``r, z, n``).
      rec_rz: recurrent pre-activations of ``r`` and ``z``, ``U_{rz} h_{t-1}``, ``[..., 2H]``.
      h_prev: previous state ``[..., H]`` in ``xp``'s dtype.
      candidate_recurrence: ``r -> `` the recurrent term of the candidate, ``[..., H]``:
        ``r * (U_n h_{t-1} + b_hn)`` (reset after) or ``U_n (r * h_{t-1})`` (classic).

    Returns:
      ``(h, rz, n)``: the new state, the gate activations ``[..., 2H]`` and the candidate.
    """
    H = h_prev.shape[-1]
    rz = sigmoid(xp[..., : 2 * H] + rec_rz)
    r, z = rz[..., :H], rz[..., H:]
    n = jnp.tanh(xp[..., 2 * H :] + candidate_recurrence(r))
    return (1.0 - z) * h_prev + z * n, rz, n
