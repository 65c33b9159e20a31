r"""The xLSTM residual block around a cell, and its gated MLP (the up/down projection).

The xLSTM paper (Beck et al. 2024) builds its models from residual blocks. The sLSTM block is
"post up-projection": a pre-norm residual around the recurrent cell, then a pre-norm residual
gated MLP,

.. math::

    u_t = x_t + \mathrm{cell}(\mathrm{LN}(x)_t), \qquad
    y_t = u_t + W_\downarrow\big(\mathrm{act}(W_g \mathrm{LN}(u_t)) \odot W_\uparrow
        \mathrm{LN}(u_t)\big)

Both pieces are position-wise except the cell, so they compose with everything else:

- :class:`GatedMLP` is a pure function with its own parameters (``init``/``__call__`` over any
  leading dimensions), usable anywhere (after any cell, in any model);
- :class:`XLSTMBlock` wraps any cell (:class:`seqjax.SLSTM`, :class:`seqjax.MLSTM`, an LSTM, ...)
  into the block above and is itself a cell: ``seqjax.scan``, ``stack``, ``bidirectional`` and the
  Flax adapters run it, and over a sequence the inner cell keeps its fast kernels (the mLSTM's
  chunk-wise form), since the norms and the MLP run before and after the inner scan.

The MLP is the ``xlstm`` package's ``GatedFeedForward`` (``proj_up`` split into gate and up
halves, in that order); its ``LayerNorm`` has a weight and no bias, as here.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from seqjax import _checks
from seqjax.cells.base import Cell, affine, glorot_uniform
from seqjax.scan_engine import ScanOptions
from seqjax.typing import Array, DType, PRNGKey, PyTree, Shape

ACTIVATIONS = {
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "swish": jax.nn.silu,
    "relu": jax.nn.relu,
}
_LN_EPS = 1e-5


def layer_norm(x: Array, scale: Array) -> Array:
    """Layer norm over the last axis with a gain and no bias (eps 1e-5), in ``x``'s dtype.

    Args:
      x: ``[..., F]``.
      scale: the gain ``[F]``.

    Returns:
      ``[..., F]``, each row with zero mean and unit variance, times ``scale``.
    """
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + jnp.asarray(_LN_EPS, x.dtype)) * scale.astype(x.dtype)


class GatedMLPParams(NamedTuple):
    """Parameters of :class:`GatedMLP`.

    Attributes:
      w_up: ``[F, 2U]``, blocks ``gate, up``.
      w_down: ``[U, F]``.
      b_up: ``[2U]`` or None.
      b_down: ``[F]`` or None.
    """

    w_up: Array
    w_down: Array
    b_up: Array | None = None
    b_down: Array | None = None


@dataclasses.dataclass(frozen=True)
class GatedMLP:
    r"""Gated MLP ``W_down(act(W_gate x) * W_up x)``: the xLSTM blocks' up/down projection.

    The hidden width is ``U = ceil(proj_factor * F / multiple_of) * multiple_of`` (the ``xlstm``
    package's rounding; its sLSTM block uses ``proj_factor=4/3``).

    Options: ``proj_factor``; ``multiple_of``; ``activation``: ``"gelu"`` (exact, erf),
    ``"swish"`` or ``"relu"``; ``use_bias``; ``param_dtype``.

    Shapes: ``x [..., F]`` gives ``[..., F]``; parameters :class:`GatedMLPParams`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from seqjax.cells.xlstm_block import GatedMLP
      >>> mlp = GatedMLP(proj_factor=4 / 3, multiple_of=8)
      >>> params = mlp.init(jax.random.key(0), features=16)
      >>> params.w_up.shape, mlp(params, jnp.ones((2, 5, 16))).shape
      ((16, 48), (2, 5, 16))
    """

    proj_factor: float = 4 / 3
    multiple_of: int = 8
    activation: str = "gelu"
    use_bias: bool = False
    param_dtype: DType = jnp.float32

    def __post_init__(self):
        _checks.non_negative_float("GatedMLP.proj_factor", self.proj_factor)
        if self.proj_factor <= 0:
            raise ValueError(f"GatedMLP.proj_factor must be > 0, got {self.proj_factor}")
        _checks.positive_int("GatedMLP.multiple_of", self.multiple_of)
        _checks.one_of("GatedMLP.activation", self.activation, tuple(ACTIVATIONS))

    def up_size(self, features: int) -> int:
        """``U`` for ``features`` inputs."""
        return math.ceil(self.proj_factor * features / self.multiple_of) * self.multiple_of

    def init(self, key: PRNGKey, features: int) -> GatedMLPParams:
        """Glorot-uniform weights (zero biases) for ``features`` inputs and outputs."""
        _checks.positive_int("features", features)
        U, pdt = self.up_size(features), self.param_dtype
        k_up, k_down = jax.random.split(key)
        fields: dict[str, Any] = dict(
            w_up=glorot_uniform(k_up, (features, 2 * U), pdt),
            w_down=glorot_uniform(k_down, (U, features), pdt),
        )
        if self.use_bias:
            fields.update(b_up=jnp.zeros((2 * U,), pdt), b_down=jnp.zeros((features,), pdt))
        return GatedMLPParams(**fields)

    def __call__(self, params: GatedMLPParams, x: Array, compute_dtype: DType | None = None):
        """Applies the MLP.

        Args:
          params: :class:`GatedMLPParams` from :meth:`init`.
          x: ``[..., F]``, any leading dimensions.
          compute_dtype: matmul dtype (None: the weights').

        Returns:
          ``[..., F]`` in ``x``'s dtype.
        """
        up = affine(x, params.w_up, params.b_up, compute_dtype)
        U = params.w_down.shape[0]
        hidden = ACTIVATIONS[self.activation](up[..., :U]) * up[..., U:]
        return affine(hidden, params.w_down, params.b_down, compute_dtype).astype(x.dtype)


class XLSTMBlockParams(NamedTuple):
    """Parameters of :class:`XLSTMBlock`.

    Attributes:
      cell: the inner cell's parameters.
      norm: gain of the pre-norm before the cell ``[F]``.
      mlp_norm: gain of the pre-norm before the MLP ``[F]`` (None without MLP).
      mlp: :class:`GatedMLPParams` (None without MLP).
    """

    cell: Any
    norm: Array
    mlp_norm: Array | None = None
    mlp: GatedMLPParams | None = None


@dataclasses.dataclass(frozen=True)
class XLSTMBlock(Cell):
    r"""The xLSTM residual block (post up-projection) around ``cell``; itself a cell.

    ``u = x + cell(LN(x))``, then ``y = u + GatedMLP(LN(u))`` (see the module docstring);
    ``mlp_proj_factor=None`` leaves the MLP out. The residual needs ``I = cell.output_size``.
    The carry is the inner cell's.

    Options: ``cell``; ``mlp_proj_factor``, ``mlp_multiple_of``, ``mlp_activation``,
    ``mlp_use_bias``: the :class:`GatedMLP`'s.

    Shapes: ``x [*B, F]`` gives ``y [*B, F]``; parameters :class:`XLSTMBlockParams`.

    Example:
      >>> import jax, jax.numpy as jnp, seqjax
      >>> from seqjax.cells.xlstm_block import XLSTMBlock
      >>> block = XLSTMBlock(seqjax.SLSTM(16, num_heads=4, conv_kernel_size=4))
      >>> model = seqjax.stack([block, XLSTMBlock(seqjax.MLSTM(16, num_heads=4))])
      >>> params = model.init(jax.random.key(0), input_size=16)
      >>> _, ys = seqjax.scan(model, params, jnp.ones((2, 7, 16)), lengths=jnp.array([7, 3]))
      >>> ys.shape
      (2, 7, 16)
    """

    cell: Cell
    mlp_proj_factor: float | None = 4 / 3
    mlp_multiple_of: int = 8
    mlp_activation: str = "gelu"
    mlp_use_bias: bool = False

    def __post_init__(self):
        if not isinstance(self.cell, Cell):
            raise TypeError(f"XLSTMBlock.cell must be a seqjax cell, got {self.cell!r}")
        _ = self.mlp  # validates the MLP options

    @property
    def mlp(self) -> GatedMLP | None:
        """The block's :class:`GatedMLP` (None without one)."""
        if self.mlp_proj_factor is None:
            return None
        return GatedMLP(
            proj_factor=self.mlp_proj_factor,
            multiple_of=self.mlp_multiple_of,
            activation=self.mlp_activation,
            use_bias=self.mlp_use_bias,
            param_dtype=getattr(self.cell, "param_dtype", jnp.float32),
        )

    @property
    def output_size(self) -> int:
        return self.cell.output_size

    def init(self, key: PRNGKey, input_size: int) -> XLSTMBlockParams:
        """Creates :class:`XLSTMBlockParams`; the norms' gains start at one."""
        F = self.cell.output_size
        if input_size != F:
            raise ValueError(
                f"XLSTMBlock adds its input to the cell's output: input_size must be the cell's "
                f"output size {F}, got {input_size}"
            )
        pdt = getattr(self.cell, "param_dtype", jnp.float32)
        k_cell, k_mlp = jax.random.split(key)
        params = XLSTMBlockParams(cell=self.cell.init(k_cell, input_size), norm=jnp.ones((F,), pdt))
        mlp = self.mlp
        if mlp is not None:
            params = params._replace(mlp_norm=jnp.ones((F,), pdt), mlp=mlp.init(k_mlp, F))
        return params

    def initial_carry(self, batch_shape: Shape = (), dtype: DType = jnp.float32) -> PyTree:
        """The inner cell's initial carry."""
        return self.cell.initial_carry(batch_shape, dtype)

    def input_size_of(self, params: XLSTMBlockParams) -> int:
        return self.cell.input_size_of(params.cell)

    def check_carry(self, carry: PyTree, batch_shape: Shape) -> None:
        self.cell.check_carry(carry, batch_shape)

    def _post(self, params: XLSTMBlockParams, x: Array, y: Array) -> Array:
        u = x.astype(y.dtype) + y
        mlp = self.mlp
        if mlp is None or params.mlp is None or params.mlp_norm is None:
            return u
        compute = getattr(self.cell, "dtype", None)
        return u + mlp(params.mlp, layer_norm(u, params.mlp_norm), compute)

    def project_inputs(self, params: XLSTMBlockParams, xs: Array) -> Array:
        """``[x, cell.project_inputs(LN(x))]``: the step needs ``x`` for the residual."""
        xn = layer_norm(xs, params.norm)
        xp = self.cell.project_inputs(params.cell, xn)
        return jnp.concatenate([xs.astype(xp.dtype), xp], axis=-1)

    def step(self, params: XLSTMBlockParams, carry: PyTree, xp: Array) -> tuple[PyTree, Array]:
        """The inner step on the normalised input, then the residual and the MLP."""
        F = self.cell.output_size
        carry, y = self.cell.step(params.cell, carry, xp[..., F:])
        return carry, self._post(params, xp[..., :F], y)

    def scan_time_major(
        self,
        params: XLSTMBlockParams,
        carry: PyTree,
        xs: Array,
        mask: Array | None,
        *,
        reverse: bool = False,
        unroll: int = 1,
        key: PRNGKey | None = None,
        options: ScanOptions,
    ) -> tuple[PyTree, Array]:
        """Norm, the inner cell's own scan (its kernels included), then the position-wise rest;
        outputs are zero at masked steps."""
        final, ys = self.cell.scan_time_major(
            params.cell,
            carry,
            layer_norm(xs, params.norm),
            mask,
            reverse=reverse,
            unroll=unroll,
            key=key,
            options=options,
        )
        out = self._post(params, xs, ys)
        if mask is not None:
            out = jnp.where(mask[..., None], out, jnp.zeros((), out.dtype))
        return final, out
