"""The Elman recurrent network, the baseline that gating improves on."""

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
    glorot_uniform,
    matmul,
    orthogonal,
)
from seqjax.typing import Array, DType, PRNGKey, Shape

Initializer = Callable[..., Array]

ACTIVATIONS: dict[str, Callable[[Array], Array]] = {"tanh": jnp.tanh, "relu": jax.nn.relu}


class SimpleRNNParams(NamedTuple):
    """Parameters of :class:`SimpleRNN`.

    Attributes:
      w_ih: input weights ``[I, H]``.
      w_hh: recurrent weights ``[H, H]``.
      b: bias ``[H]`` (PyTorch's ``b_ih + b_hh``), or None.
    """

    w_ih: Array
    w_hh: Array
    b: Array | None = None


class SimpleRNNCarry(NamedTuple):
    """Carry of :class:`SimpleRNN`: the hidden state ``h [*B, H]``."""

    h: Array


@dataclasses.dataclass(frozen=True)
class SimpleRNN(Cell):
    r"""Elman recurrent cell.

    .. math::

        h_t = \phi(W x_t + U h_{t-1} + b), \qquad \phi \in \{\tanh, \mathrm{relu}\}

    Options: ``hidden_size=H``; ``activation``: ``"tanh"`` or ``"relu"``; ``use_bias``;
    ``dtype``: matmul dtype (None: the parameters'); ``param_dtype``; ``kernel_init``,
    ``recurrent_init`` (default Glorot-uniform and orthogonal; an identity recurrent init with
    ``"relu"`` is an IRNN, Le et al. 2015).

    Shapes: ``x [*B, I]`` gives ``y [*B, H]``; the carry is :class:`SimpleRNNCarry`
    ``h [*B, H]``; the parameters are :class:`SimpleRNNParams` ``w_ih [I, H]``,
    ``w_hh [H, H]``, ``b [H]``. ``docs/cells.md`` has the PyTorch and Flax mappings.

    Example:
      >>> import jax, jax.numpy as jnp, seqjax
      >>> cell = seqjax.SimpleRNN(hidden_size=4)
      >>> params = cell.init(jax.random.key(0), input_size=2)
      >>> carry, y = cell(params, cell.initial_carry(), jnp.ones((2,)))
      >>> y.shape
      (4,)
    """

    hidden_size: int
    activation: str = "tanh"
    use_bias: bool = True
    dtype: DType | None = None
    param_dtype: DType = jnp.float32
    kernel_init: Initializer = dataclasses.field(default=glorot_uniform, repr=False)
    recurrent_init: Initializer = dataclasses.field(default=orthogonal, repr=False)

    def __post_init__(self):
        _checks.positive_int("SimpleRNN.hidden_size", self.hidden_size)
        _checks.one_of("SimpleRNN.activation", self.activation, ACTIVATIONS)
        if not isinstance(self.use_bias, bool):
            raise TypeError(f"SimpleRNN.use_bias must be a bool, got {self.use_bias!r}")

    @property
    def output_size(self) -> int:
        return self.hidden_size

    def init(self, key: PRNGKey, input_size: int) -> SimpleRNNParams:
        """Creates :class:`SimpleRNNParams` for ``input_size`` input features."""
        _checks.positive_int("input_size", input_size)
        H, pdt = self.hidden_size, self.param_dtype
        k_ih, k_hh = jax.random.split(key)
        return SimpleRNNParams(
            w_ih=self.kernel_init(k_ih, (input_size, H), pdt),
            w_hh=self.recurrent_init(k_hh, (H, H), pdt),
            b=jnp.zeros((H,), pdt) if self.use_bias else None,
        )

    def initial_carry(self, batch_shape: Shape = (), dtype: DType = jnp.float32) -> SimpleRNNCarry:
        """Zeros: ``SimpleRNNCarry(h [*B, H])``."""
        return SimpleRNNCarry(h=jnp.zeros(tuple(batch_shape) + (self.hidden_size,), dtype))

    def input_size_of(self, params: SimpleRNNParams) -> int:
        return params.w_ih.shape[0]

    def project_inputs(self, params: SimpleRNNParams, xs: Array) -> Array:
        """``W x + b``: ``[..., I] -> [..., H]``."""
        return affine(xs, params.w_ih, params.b, self.dtype)

    def step(
        self, params: SimpleRNNParams, carry: SimpleRNNCarry, xp: Array
    ) -> tuple[SimpleRNNCarry, Array]:
        """One step from the projected input ``xp [*B, H]``; returns ``(carry, h)``."""
        a = xp + matmul(carry.h, params.w_hh, self.dtype, xp.dtype)
        h = ACTIVATIONS[self.activation](a).astype(carry.h.dtype)  # the fused kernel: same
        return SimpleRNNCarry(h=h), h
