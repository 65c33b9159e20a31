r"""The mLSTM cell of xLSTM (Beck et al. 2024): a matrix memory with exponential gating.

The mLSTM stores key-value outer products in a matrix memory ``C`` per head and reads it with a
query, normalised by ``n`` (the sum of the keys stored). Its gates see the input only (no memory
mixing), so it has three equivalent forms: this module's step (the recurrent form), a parallel
form quadratic in T and a chunk-wise form, both in ``seqjax/kernels/mlstm.py`` and forced with
``seqjax.scan(..., impl="parallel" | "chunkwise")``.

All forms are stabilised as in the paper and the ``xlstm`` package: the states are kept scaled by
``exp(-m)``, with ``m`` the running maximum of the log gate weights, so no exponential of a gate
overflows. The stabiliser carries no gradient: the output does not depend on it (up to ``eps``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from seqjax import _checks
from seqjax.cells.base import Cell, accum_dtype, affine, concat_init, glorot_uniform, sigmoid
from seqjax.typing import Array, DType, PRNGKey, Shape

Initializer = Callable[..., Array]

FORGET_GATES = ("sigmoid", "exp")


class MLSTMParams(NamedTuple):
    """Parameters of :class:`MLSTM`: one fused input projection.

    Blocks along the last axis, in order: ``q, k, v`` (``H`` each, units grouped by head,
    ``[num_heads, D]``), ``i, f`` (``num_heads`` each: one scalar gate per head), and ``o``
    (``H``, absent with ``output_gate=False``).

    Attributes:
      w: input weights ``[I, K]``, ``K = 3H + 2 num_heads (+ H)``.
      b: bias ``[K]`` or None (``use_bias=False``).
    """

    w: Array
    b: Array | None = None


class MLSTMCarry(NamedTuple):
    """Carry of :class:`MLSTM` (flattened per batch element, as every seqjax carry leaf).

    Attributes:
      c: the matrix memory ``[*B, num_heads * D * D]`` (per head ``C[d_k, d_v]``, keys by
        values, like the ``xlstm`` package's ``c_state``), scaled by ``exp(-m)``.
      n: the normaliser ``[*B, num_heads * D]``, scaled by ``exp(-m)``.
      m: the stabiliser ``[*B, num_heads]`` (a log scale).
    """

    c: Array
    n: Array
    m: Array


class MLSTMInputs(NamedTuple):
    """A step's (or a sequence's) projected input split per head (see :meth:`MLSTM.split`).

    Attributes:
      q: queries ``[..., NH, D]``.
      k: keys divided by ``sqrt(D)``, ``[..., NH, D]``.
      v: values ``[..., NH, D]``.
      log_i: input-gate pre-activations (the log of the exponential input gate) ``[..., NH]``.
      log_f: log forget gates ``[..., NH]``.
      o: output gates ``sigma(o~)`` ``[..., H]``, or None with ``output_gate=False``.
    """

    q: Array
    k: Array
    v: Array
    log_i: Array
    log_f: Array
    o: Array | None


@dataclasses.dataclass(frozen=True)
class MLSTM(Cell):
    r"""mLSTM (Beck et al. 2024, xLSTM): matrix memory, exponential input gate, per-head gates.

    Per head, with ``q_t, v_t = W_{q,v} x_t + b``, ``k_t = (W_k x_t + b_k) / \sqrt{D}`` and
    scalar gates ``\tilde\imath_t, \tilde f_t = w_{i,f}^\top x_t + b``:

    .. math::

        \log f_t &= \log\sigma(\tilde f_t) \text{ or } \tilde f_t \;(\texttt{forget\_gate="exp"})\\
        m_t &= \max(\log f_t + m_{t-1},\; \tilde\imath_t) \\
        C_t &= e^{\log f_t + m_{t-1} - m_t} C_{t-1} + e^{\tilde\imath_t - m_t}\, k_t v_t^\top,
        \quad n_t = e^{\log f_t + m_{t-1} - m_t} n_{t-1} + e^{\tilde\imath_t - m_t}\, k_t \\
        \tilde h_t &= \frac{C_t^\top q_t}{\max(|n_t^\top q_t|,\; e^{-m_t}) + \epsilon},
        \quad h_t = \sigma(\tilde o_t) \odot \tilde h_t

    (the paper's ``max(|n^T q|, 1)`` in the scaled states; without ``output_gate`` the output is
    ``\tilde h_t``, as the ``xlstm`` package's cell returns it).

    Three forms compute the same function (``tests/test_xlstm.py``): ``impl="reference"`` runs
    this step; ``impl="parallel"`` the quadratic form (a ``[T, T]`` decay matrix per head);
    ``impl="chunkwise"`` the parallel form within chunks of ``chunk_size`` steps and the
    recurrence between them. ``impl="auto"`` runs the chunk-wise form (measured fastest on CPU
    at every length; ``seqjax.kernels.mlstm.AUTO_RULE``), or the step when ``remat`` is set.

    Options: ``hidden_size=H``; ``num_heads`` (divides ``H``); ``forget_gate``; ``output_gate``;
    ``eps``; ``chunk_size`` (of the chunk-wise form; a compute option, same results); ``use_bias``;
    ``dtype``: matmul dtype (None: the parameters'); ``param_dtype``; ``kernel_init`` (per block,
    Glorot-uniform). Biases start at 0 except the forget gate's, ``linspace(3, 6)`` over the
    heads (``"sigmoid"``, as the ``xlstm`` package), 0 for ``"exp"``.

    Shapes: ``x [*B, I]`` gives ``y [*B, H]``; carry :class:`MLSTMCarry`; parameters
    :class:`MLSTMParams`. Mapping to the ``xlstm`` package: docs/cells.md.

    Example:
      >>> import jax, jax.numpy as jnp, seqjax
      >>> cell = seqjax.MLSTM(hidden_size=8, num_heads=2, chunk_size=4)
      >>> params = cell.init(jax.random.key(0), input_size=3)
      >>> xs = jax.random.normal(jax.random.key(1), (2, 10, 3))
      >>> _, ys = seqjax.scan(cell, params, xs, impl="reference")
      >>> _, ys_c = seqjax.scan(cell, params, xs, impl="chunkwise")
      >>> ys.shape, bool(jnp.allclose(ys, ys_c, atol=1e-5))
      ((2, 10, 8), True)
    """

    hidden_size: int
    num_heads: int = 1
    forget_gate: str = "sigmoid"
    output_gate: bool = True
    eps: float = 1e-6
    chunk_size: int = 64
    use_bias: bool = True
    dtype: DType | None = None
    param_dtype: DType = jnp.float32
    kernel_init: Initializer = dataclasses.field(default=glorot_uniform, repr=False)

    def __post_init__(self):
        _checks.positive_int("MLSTM.hidden_size", self.hidden_size)
        _checks.positive_int("MLSTM.num_heads", self.num_heads)
        _checks.positive_int("MLSTM.chunk_size", self.chunk_size)
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"MLSTM.num_heads must divide hidden_size, got hidden_size={self.hidden_size}, "
                f"num_heads={self.num_heads}"
            )
        _checks.one_of("MLSTM.forget_gate", self.forget_gate, FORGET_GATES)
        _checks.non_negative_float("MLSTM.eps", self.eps)
        for name in ("output_gate", "use_bias"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"MLSTM.{name} must be a bool, got {getattr(self, name)!r}")

    @property
    def output_size(self) -> int:
        return self.hidden_size

    @property
    def head_size(self) -> int:
        """``D = hidden_size / num_heads``."""
        return self.hidden_size // self.num_heads

    @property
    def projection_size(self) -> int:
        """``K``, the width of the fused input projection."""
        return (4 if self.output_gate else 3) * self.hidden_size + 2 * self.num_heads

    def init(self, key: PRNGKey, input_size: int) -> MLSTMParams:
        """Creates :class:`MLSTMParams` for ``input_size`` input features."""
        _checks.positive_int("input_size", input_size)
        H, NH, pdt = self.hidden_size, self.num_heads, self.param_dtype
        k_qkv, k_if, k_o = jax.random.split(key, 3)
        blocks = [concat_init(self.kernel_init, k_qkv, (input_size, H), 3, pdt)]
        blocks.append(concat_init(self.kernel_init, k_if, (input_size, NH), 2, pdt))
        if self.output_gate:
            blocks.append(self.kernel_init(k_o, (input_size, H), pdt))
        fields = dict(w=jnp.concatenate(blocks, axis=-1))
        if self.use_bias:
            b = jnp.zeros((self.projection_size,), pdt)
            if self.forget_gate == "sigmoid":
                b = b.at[3 * H + NH : 3 * H + 2 * NH].set(jnp.linspace(3.0, 6.0, NH, dtype=pdt))
            fields["b"] = b
        return MLSTMParams(**fields)

    def initial_carry(self, batch_shape: Shape = (), dtype: DType = jnp.float32) -> MLSTMCarry:
        """Zeros: ``MLSTMCarry(c [*B, NH*D*D], n [*B, NH*D], m [*B, NH])``."""
        B, NH, D = tuple(batch_shape), self.num_heads, self.head_size
        return MLSTMCarry(
            c=jnp.zeros(B + (NH * D * D,), dtype),
            n=jnp.zeros(B + (NH * D,), dtype),
            m=jnp.zeros(B + (NH,), dtype),
        )

    def input_size_of(self, params: MLSTMParams) -> int:
        return params.w.shape[0]

    def project_inputs(self, params: MLSTMParams, xs: Array) -> Array:
        """``W x + b``: ``[..., I] -> [..., K]`` (everything of a step is a function of x)."""
        return affine(xs, params.w, params.b, self.dtype)

    def split(self, xp: Array) -> MLSTMInputs:
        """Splits a projected input ``[..., K]`` into per-head queries, keys, values and gates.

        Used by the step and by the parallel and chunk-wise kernels alike.
        """
        H, NH, D = self.hidden_size, self.num_heads, self.head_size
        lead = xp.shape[:-1]

        def heads(a):
            return a.reshape(lead + (NH, D))

        q, k, v = (heads(xp[..., j * H : (j + 1) * H]) for j in range(3))
        k = k / jnp.asarray(math.sqrt(D), k.dtype)
        log_i = xp[..., 3 * H : 3 * H + NH]
        f_t = xp[..., 3 * H + NH : 3 * H + 2 * NH]
        log_f = jax.nn.log_sigmoid(f_t) if self.forget_gate == "sigmoid" else f_t
        o = sigmoid(xp[..., 3 * H + 2 * NH :]) if self.output_gate else None
        return MLSTMInputs(q=q, k=k, v=v, log_i=log_i, log_f=log_f, o=o)

    def readout(self, num: Array, qn: Array, m: Array, o: Array | None) -> Array:
        """``h = o * num / (max(|qn|, exp(-m)) + eps)`` from per-head ``num [..., NH, D]``,
        ``qn, m [..., NH]``; returns ``[..., H]``."""
        den = jnp.maximum(jnp.abs(qn), jnp.exp(-m)) + jnp.asarray(self.eps, num.dtype)
        h = num / den[..., None]
        h = h.reshape(h.shape[:-2] + (self.hidden_size,))
        return h if o is None else o * h

    def unflatten_carry(self, carry: MLSTMCarry, dtype: DType) -> tuple[Array, Array, Array]:
        """``(C [*B, NH, D, D], n [*B, NH, D], m [*B, NH])`` in ``dtype``."""
        NH, D = self.num_heads, self.head_size
        lead = carry.m.shape[:-1]
        return (
            carry.c.astype(dtype).reshape(lead + (NH, D, D)),
            carry.n.astype(dtype).reshape(lead + (NH, D)),
            carry.m.astype(dtype),
        )

    def flatten_carry(self, c: Array, n: Array, m: Array, dtype: DType) -> MLSTMCarry:
        """The inverse of :meth:`unflatten_carry`, cast to ``dtype``."""
        lead = m.shape[:-1]
        return MLSTMCarry(
            c=c.reshape(lead + (-1,)).astype(dtype),
            n=n.reshape(lead + (-1,)).astype(dtype),
            m=m.astype(dtype),
        )

    def step(self, params: MLSTMParams, carry: MLSTMCarry, xp: Array) -> tuple[MLSTMCarry, Array]:
        """One mLSTM step (the recurrent form) from ``xp [*B, K]``; returns ``(carry, h)``."""
        del params
        acc = accum_dtype(xp.dtype)
        s = self.split(xp.astype(acc))
        c, n, m = self.unflatten_carry(carry, acc)
        m_new = jax.lax.stop_gradient(jnp.maximum(s.log_f + m, s.log_i))
        f_s = jnp.exp(s.log_f + m - m_new)[..., None]
        i_s = jnp.exp(s.log_i - m_new)[..., None]
        c = f_s[..., None] * c + i_s[..., None] * (s.k[..., :, None] * s.v[..., None, :])
        n = f_s * n + i_s * s.k
        num = jnp.einsum("...d,...de->...e", s.q, c)
        qn = jnp.sum(s.q * n, axis=-1)
        h = self.readout(num, qn, m_new, s.o).astype(carry.c.dtype)
        return self.flatten_carry(c, n, m_new, carry.c.dtype), h
