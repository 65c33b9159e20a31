r"""The sLSTM cell of xLSTM (Beck et al. 2024): exponential gating, normaliser, stabiliser, heads.

The sLSTM keeps the LSTM's memory mixing (the gates see the previous output through recurrent
weights) but gates the cell with an exponential input gate, normalises the cell by the sum of the
gates it has seen (``n``), and carries a log-scale stabiliser ``m`` so that the exponentials never
overflow. The recurrent weights are block-diagonal over heads: each head mixes only its own
``D = H / num_heads`` units.

The official implementation (``xlstm`` on PyPI, ``sLSTMCell`` with ``backend="vanilla"``) is the
reference of ``tests/test_xlstm.py``: after the weight conversion of docs/cells.md the outputs
and states agree to float64 rounding.

The xLSTM paper's sLSTM *block* also feeds the input and forget gates through a causal
convolution (``conv_kernel_size``, here an option of the cell) and ends in a gated MLP (the
block's up/down projection), which is a position-wise function of the outputs, not part of the
recurrence: :class:`seqjax.cells.xlstm_block.GatedMLP`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from seqjax import _checks
from seqjax.cells.base import (
    Cell,
    accum_dtype,
    affine,
    concat_init,
    glorot_uniform,
    orthogonal,
    sigmoid,
)
from seqjax.typing import Array, DType, PRNGKey, Shape

Initializer = Callable[..., Array]

FORGET_GATES = ("sigmoid", "exp")


class SLSTMParams(NamedTuple):
    """Parameters of :class:`SLSTM`. Gate blocks are in order ``i, f, z, o``; inside a block
    the ``H`` units are grouped by head (``[num_heads, D]``, ``D = H / num_heads``).

    Attributes:
      w: input weights ``[I, 4H]``.
      r: head-wise recurrent weights ``[num_heads, D, 4, D]``: ``r[h, d_in, gate, d_out]``
        (the layout of the ``xlstm`` package's ``recurrent_kernel``).
      b: bias ``[4H]`` or None (``use_bias=False``).
      w_conv: depthwise causal convolution ``[K, H]`` (``conv_kernel_size=K > 0``, which needs
        ``I = H``); row ``K - 1`` multiplies the current input.
      b_conv: its bias ``[H]``.
    """

    w: Array
    r: Array
    b: Array | None = None
    w_conv: Array | None = None
    b_conv: Array | None = None


class SLSTMCarry(NamedTuple):
    """Carry of :class:`SLSTM`, every leaf ``[*B, H]`` except ``conv``.

    Attributes:
      h: the output ``h_t``, fed back through the recurrent weights.
      c: the cell state, scaled by ``exp(-m)``.
      n: the normaliser, scaled by ``exp(-m)`` (0 before the first step).
      m: the stabiliser (a log scale).
      conv: the last ``K - 1`` inputs ``[*B, (K - 1) * H]``, oldest first, when
        ``conv_kernel_size=K > 1``; else None.
    """

    h: Array
    c: Array
    n: Array
    m: Array
    conv: Array | None = None


@dataclasses.dataclass(frozen=True)
class SLSTM(Cell):
    r"""sLSTM (Beck et al. 2024, xLSTM): exponential gating with normaliser and stabiliser.

    Per unit, with pre-activations ``\tilde g_t = W_g x_t + R_g h_{t-1} + b_g`` (``R`` block
    diagonal over heads) for ``g = i, f, z, o``:

    .. math::

        \log f_t &= \log\sigma(\tilde f_t) \text{ or } \tilde f_t \;(\texttt{forget\_gate="exp"})\\
        m_t &= \max(\log f_t + m_{t-1},\; \tilde\imath_t)
            \quad (m_t = \tilde\imath_t \text{ while } n_{t-1} = 0) \\
        i'_t &= \exp(\tilde\imath_t - m_t), \quad f'_t = \exp(\log f_t + m_{t-1} - m_t) \\
        c_t &= f'_t c_{t-1} + i'_t \tanh(\tilde z_t), \quad n_t = f'_t n_{t-1} + i'_t \\
        h_t &= \sigma(\tilde o_t)\, c_t / n_t

    ``c`` and ``n`` are the paper's states times ``exp(-m_t)``, so ``h_t`` is the paper's; the
    stabiliser carries no gradient (``h`` does not depend on it) and ``n_t >= 1`` after the
    first step, so ``|h_t| <= 1`` and nothing overflows, whatever the pre-activations. The
    first-step rule is the ``xlstm`` package's.

    With ``conv_kernel_size=K > 0`` the input and forget gates see ``swish(conv(x))`` instead of
    ``x``, a depthwise causal convolution over the last ``K`` inputs (the paper's sLSTM block,
    where the input has the cell's width: it needs ``I = H``); ``z`` and ``o`` see ``x``. The
    carry then also holds the last ``K - 1`` inputs.

    Options: ``hidden_size=H``; ``num_heads`` (divides ``H``); ``forget_gate``: ``"sigmoid"`` or
    ``"exp"``; ``conv_kernel_size``; ``use_bias``; ``dtype``: matmul dtype (None: the
    parameters'); ``param_dtype``; ``kernel_init`` (per ``[I, H]`` gate block, Glorot-uniform);
    ``recurrent_init`` (per ``[D, D]`` head and gate block, orthogonal). The forget-gate bias
    starts at ``linspace(3, 6)`` over each head's units for ``"sigmoid"`` (the ``xlstm``
    package's "small_init"), at 0 for ``"exp"``; other biases at 0, the convolution at identity.

    Shapes: ``x [*B, I]`` gives ``y = h [*B, H]``; carry :class:`SLSTMCarry`; parameters
    :class:`SLSTMParams`. Mapping to the ``xlstm`` package: docs/cells.md.

    Example:
      >>> import jax, jax.numpy as jnp, seqjax
      >>> cell = seqjax.SLSTM(hidden_size=8, num_heads=2)
      >>> params = cell.init(jax.random.key(0), input_size=3)
      >>> final, ys = seqjax.scan(cell, params, jnp.ones((2, 5, 3)), lengths=jnp.array([5, 2]))
      >>> ys.shape, final.m.shape, bool(jnp.all(jnp.abs(ys) <= 1))
      ((2, 5, 8), (2, 8), True)
    """

    hidden_size: int
    num_heads: int = 1
    forget_gate: str = "sigmoid"
    conv_kernel_size: int = 0
    use_bias: bool = True
    dtype: DType | None = None
    param_dtype: DType = jnp.float32
    kernel_init: Initializer = dataclasses.field(default=glorot_uniform, repr=False)
    recurrent_init: Initializer = dataclasses.field(default=orthogonal, repr=False)

    def __post_init__(self):
        _checks.positive_int("SLSTM.hidden_size", self.hidden_size)
        _checks.positive_int("SLSTM.num_heads", self.num_heads)
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"SLSTM.num_heads must divide hidden_size, got hidden_size={self.hidden_size}, "
                f"num_heads={self.num_heads}"
            )
        _checks.one_of("SLSTM.forget_gate", self.forget_gate, FORGET_GATES)
        if (
            not isinstance(self.conv_kernel_size, (int, np.integer))
            or isinstance(self.conv_kernel_size, bool)
            or self.conv_kernel_size < 0
        ):
            raise ValueError(
                f"SLSTM.conv_kernel_size must be an int >= 0, got {self.conv_kernel_size!r}"
            )
        if not isinstance(self.use_bias, bool):
            raise TypeError(f"SLSTM.use_bias must be a bool, got {self.use_bias!r}")

    @property
    def output_size(self) -> int:
        return self.hidden_size

    @property
    def head_size(self) -> int:
        """``D = hidden_size / num_heads``."""
        return self.hidden_size // self.num_heads

    def init(self, key: PRNGKey, input_size: int) -> SLSTMParams:
        """Creates :class:`SLSTMParams` for ``input_size`` input features."""
        _checks.positive_int("input_size", input_size)
        if self.conv_kernel_size and input_size != self.hidden_size:
            raise ValueError(
                f"SLSTM with conv_kernel_size={self.conv_kernel_size} convolves its input, which "
                f"must have hidden_size={self.hidden_size} features, got input_size={input_size}"
            )
        H, NH, D, pdt = self.hidden_size, self.num_heads, self.head_size, self.param_dtype
        k_w, k_r = jax.random.split(key)
        w = concat_init(self.kernel_init, k_w, (input_size, H), 4, pdt)
        keys = jax.random.split(k_r, NH * 4)
        r = jnp.stack([self.recurrent_init(k, (D, D), pdt) for k in keys])
        r = r.reshape(NH, 4, D, D).transpose(0, 2, 1, 3)  # [NH, D_in, 4, D_out]
        fields = dict(w=w, r=r)
        if self.use_bias:
            b = jnp.zeros((4, NH, D), pdt)
            if self.forget_gate == "sigmoid":
                b = b.at[1].set(jnp.broadcast_to(jnp.linspace(3.0, 6.0, D, dtype=pdt), (NH, D)))
            fields["b"] = b.reshape(4 * H)
        K = self.conv_kernel_size
        if K:
            fields["w_conv"] = jnp.zeros((K, input_size), pdt).at[K - 1].set(1.0)
            fields["b_conv"] = jnp.zeros((input_size,), pdt)
        return SLSTMParams(**fields)

    def initial_carry(self, batch_shape: Shape = (), dtype: DType = jnp.float32) -> SLSTMCarry:
        """Zeros: ``SLSTMCarry(h, c, n, m)`` each ``[*B, H]`` (``n = 0``: nothing seen yet), and
        ``conv [*B, (K - 1) * H]`` with ``conv_kernel_size=K > 1``."""
        shape = tuple(batch_shape) + (self.hidden_size,)
        # One buffer per leaf: a train step that donates the carry must not see one buffer twice.
        h, c, n, m = (jnp.zeros(shape, dtype) for _ in range(4))
        conv = None
        if self.conv_kernel_size > 1:
            conv = jnp.zeros(
                tuple(batch_shape) + ((self.conv_kernel_size - 1) * self.hidden_size,), dtype
            )
        return SLSTMCarry(h=h, c=c, n=n, m=m, conv=conv)

    def input_size_of(self, params: SLSTMParams) -> int:
        return params.w.shape[0]

    def project_inputs(self, params: SLSTMParams, xs: Array) -> Array:
        """``W x + b`` ``[..., 4H]``; with a convolution ``[x, W_zo x + b_zo]`` ``[..., I + 2H]``
        (the input and forget gates are computed in the step, after the convolution)."""
        if not self.conv_kernel_size:
            return affine(xs, params.w, params.b, self.dtype)
        H = self.hidden_size
        b_zo = None if params.b is None else params.b[2 * H :]
        zo = affine(xs, params.w[:, 2 * H :], b_zo, self.dtype)
        return jnp.concatenate([xs.astype(zo.dtype), zo], axis=-1)

    def recurrent(self, params: SLSTMParams, h: Array, acc: DType) -> Array:
        """``R h``: the head-wise recurrent pre-activations ``[..., 4H]`` (gate-major)."""
        NH, D = self.num_heads, self.head_size
        cdt = params.r.dtype if self.dtype is None else self.dtype
        hh = h.reshape(h.shape[:-1] + (NH, D)).astype(cdt)
        rec = jnp.einsum("...nd,ndge->...gne", hh, params.r.astype(cdt), preferred_element_type=acc)
        return rec.reshape(h.shape[:-1] + (4 * self.hidden_size,))

    def _conv_gates(self, params: SLSTMParams, carry: SLSTMCarry, x: Array):
        """Input/forget pre-activations from ``swish(conv(x))`` and the new conv buffer."""
        K, H, acc = self.conv_kernel_size, self.hidden_size, x.dtype
        I = x.shape[-1]
        if K > 1:
            assert carry.conv is not None  # initial_carry makes it
            window = jnp.concatenate(
                [carry.conv.astype(acc).reshape(x.shape[:-1] + (K - 1, I)), x[..., None, :]],
                axis=-2,
            )
            buffer = window[..., 1:, :].reshape(x.shape[:-1] + ((K - 1) * I,))
        else:
            window, buffer = x[..., None, :], None
        w_conv, b_conv = params.w_conv, params.b_conv
        assert w_conv is not None and b_conv is not None  # init makes them with the option
        conv = jnp.sum(window * w_conv.astype(acc), axis=-2) + b_conv.astype(acc)
        u = jax.nn.silu(conv)
        b_if = None if params.b is None else params.b[: 2 * H]
        return affine(u, params.w[:, : 2 * H], b_if, self.dtype), buffer

    def step(self, params: SLSTMParams, carry: SLSTMCarry, xp: Array) -> tuple[SLSTMCarry, Array]:
        """One sLSTM step from the projected input; returns ``(carry, h)``."""
        H = self.hidden_size
        acc = accum_dtype(xp.dtype)
        xp = xp.astype(acc)
        buffer = None
        if self.conv_kernel_size:
            I = xp.shape[-1] - 2 * H
            pre_if, buffer = self._conv_gates(params, carry, xp[..., :I])
            xp = jnp.concatenate([pre_if, xp[..., I:]], axis=-1)
            if buffer is not None:
                buffer = buffer.astype(carry.h.dtype)
        pre = xp + self.recurrent(params, carry.h, acc)
        i_t, f_t, z_t, o_t = (pre[..., k * H : (k + 1) * H] for k in range(4))
        log_f = jax.nn.log_sigmoid(f_t) if self.forget_gate == "sigmoid" else f_t
        c, n, m = (a.astype(acc) for a in (carry.c, carry.n, carry.m))
        # the stabiliser: the output does not depend on it, so it carries no gradient
        m_new = jax.lax.stop_gradient(jnp.where(n == 0, i_t, jnp.maximum(i_t, log_f + m)))
        i_s = jnp.exp(i_t - m_new)
        f_s = jnp.exp(log_f + m - m_new)
        c = f_s * c + i_s * jnp.tanh(z_t)
        n = f_s * n + i_s
        h = sigmoid(o_t) * c / n
        dt = carry.h.dtype
        new = SLSTMCarry(h=h.astype(dt), c=c.astype(dt), n=n.astype(dt), m=m_new.astype(dt))
        if buffer is not None:
            new = new._replace(conv=buffer)
        return new, new.h
