"""The cell contract shared by every recurrent cell and combinator.

A cell *definition* holds hyperparameters only: it is a frozen, hashable dataclass, so it can be a
static argument to ``jax.jit`` and written into a run's config. Arrays live outside it, in the
parameter and carry NamedTuples its methods take and return:

.. code-block:: python

    cell = seqjax.LSTM(hidden_size=256)
    params = cell.init(key, input_size=128)        # LSTMParams (a pytree of arrays)
    carry = cell.initial_carry(batch_shape=(32,))  # LSTMCarry(h, c)
    carry, y = cell(params, carry, x_t)            # one step; x_t: [*B, I], y: [*B, H]

A step is split in two so that sequence runners can hoist work out of the recurrence:
``project_inputs`` is everything that depends on the input alone (for an LSTM the input matmul
and bias, for all time steps at once), and ``step`` is the recurrence given that projection.
``cell(params, carry, x)`` is ``step(params, carry, project_inputs(params, x))``.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from seqjax import _checks, _params
from seqjax.scan_engine import ScanOptions, scan_layer
from seqjax.typing import Array, DType, PRNGKey, PyTree, Shape


class Cell(abc.ABC):
    """Base class of seqjax cell definitions (subclasses are frozen dataclasses).

    A subclass must define :attr:`output_size`, :meth:`init`, :meth:`initial_carry`,
    :meth:`input_size_of` and :meth:`step` (abstract here: a class missing one cannot be
    instantiated). :meth:`project_inputs` defaults to the identity and :meth:`scan_time_major`
    to the per-layer kernel dispatch of :mod:`seqjax.scan_engine`; combinators override it.
    """

    # Set by ``@dataclasses.dataclass`` on every concrete subclass; declared here so that type
    # checkers see a Cell as a dataclass instance (for :meth:`replace`).
    __dataclass_fields__: ClassVar[dict[str, Any]]

    # -- the contract -----------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def output_size(self) -> int:
        """Number of features of the per-step output ``y``."""

    @abc.abstractmethod
    def init(self, key: PRNGKey, input_size: int) -> PyTree:
        """Creates parameters for inputs with ``input_size`` features.

        Args:
          key: a ``jax.random`` key.
          input_size: ``I``, the number of input features per step.

        Returns:
          The cell's parameter NamedTuple.
        """

    @abc.abstractmethod
    def initial_carry(self, batch_shape: Shape = (), dtype: DType = jnp.float32) -> PyTree:
        """Returns the all-zeros carry for a batch of shape ``batch_shape``.

        Args:
          batch_shape: leading batch dimensions ``*B`` (``()`` for a single sequence).
          dtype: carry dtype. Keep float32 when computing in bfloat16: the carry accumulates.

        Returns:
          The cell's carry NamedTuple, every leaf of shape ``[*B, n]``.
        """

    @abc.abstractmethod
    def input_size_of(self, params: PyTree) -> int:
        """The input size ``I`` that ``params`` were created for (``init``'s ``input_size``)."""

    def project_inputs(self, params: PyTree, xs: Array) -> Array:
        """Everything of a step that depends on the input alone.

        Sequence runners call this once on all time steps (one large matmul) before the
        recurrence. The default is the identity.

        Args:
          params: the cell's parameters.
          xs: inputs ``[..., I]``, any leading dimensions (time included).

        Returns:
          The projected inputs ``[..., K]`` that ``step`` consumes.
        """
        del params
        return xs

    @abc.abstractmethod
    def step(self, params: PyTree, carry: PyTree, xp: Array) -> tuple[PyTree, Array]:
        """One step of the recurrence, given the projected input ``project_inputs(params, x)``.

        Args:
          params: the cell's parameters.
          carry: the carry, leaves ``[*B, n]``.
          xp: the projected input ``[*B, K]``.

        Returns:
          ``(new_carry, y)`` with ``y`` of shape ``[*B, output_size]``.
        """

    # -- derived behaviour ------------------------------------------------------------------
    def __call__(self, params: PyTree, carry: PyTree, x: Array) -> tuple[PyTree, Array]:
        """Runs one time step.

        Args:
          params: parameters from :meth:`init`.
          carry: the carry, leaves ``[*B, n]`` (see :meth:`initial_carry`).
          x: the input at this step, ``[*B, I]``.

        Returns:
          ``(new_carry, y)``, ``y`` of shape ``[*B, output_size]``.

        Raises:
          ValueError: if ``x``'s feature size differs from the parameters' or the carry's batch
            dimensions differ from ``x``'s.
          TypeError: if ``x`` is not a floating-point array.
        """
        x = self.check_step_input(params, carry, x)
        return self.step(params, carry, self.project_inputs(params, x))

    def check_step_input(self, params: PyTree, carry: PyTree, x: Any) -> Array:
        """Validates one step's input against ``params`` and ``carry``; returns ``x`` as array."""
        _params.check_step(self, params, carry, x)  # params as init makes them; x a sequence?
        x = _checks.array_like("x", x)
        _checks.floating("x", x)
        _checks.feature_size("x", x, self.input_size_of(params))
        self.check_carry(carry, x.shape[:-1])
        return x

    def check_carry(self, carry: PyTree, batch_shape: Shape) -> None:
        """Raises ValueError unless ``carry`` matches this cell's carry for ``batch_shape``."""
        expected = jax.eval_shape(lambda: self.initial_carry(tuple(batch_shape)))
        _checks.tree_shapes_match("carry", carry, expected)

    def scan_time_major(
        self,
        params: PyTree,
        carry: PyTree,
        xs: Array,
        mask: Array | None,
        *,
        reverse: bool = False,
        unroll: int = 1,
        key: PRNGKey | None = None,
        options: ScanOptions,
    ) -> tuple[PyTree, Array]:
        """Runs the cell over a time-major sequence (the engine behind :func:`seqjax.scan`).

        Inputs are not validated here; :func:`seqjax.scan` does that. Combinators override this to
        run layer by layer (stacks) or in both directions (bidirectional), passing ``options``
        on to every layer.

        Args:
          params: the cell's parameters.
          carry: initial carry, leaves ``[*B, n]``.
          xs: inputs ``[T, *B, I]``.
          mask: ``[T, *B]`` booleans, or None when every step is valid. A masked-out step leaves
            the carry unchanged and outputs zeros.
          reverse: process time from ``T - 1`` down to 0 (outputs stay in input order).
          unroll: steps per loop iteration, passed to ``jax.lax.scan``.
          key: randomness for stochastic cells and wrappers; None means deterministic.
          options: kernel choice, remat and compute dtype (:class:`seqjax.ScanOptions`).

        Returns:
          ``(final_carry, ys)`` with ``ys`` of shape ``[T, *B, output_size]``.
        """
        del key  # plain cells are deterministic
        # a registered fast kernel, or the reference lax.scan of self.step (see scan_engine)
        return scan_layer(
            self, params, carry, xs, mask, reverse=reverse, unroll=unroll, options=options
        )

    def replace(self, **changes: Any) -> Cell:
        """Returns a copy of this definition with some hyperparameters changed."""
        return dataclasses.replace(self, **changes)


def concat_init(init_fn, key: PRNGKey, shape: tuple[int, int], blocks: int, dtype: DType) -> Array:
    """Initialises a fused ``[n_in, blocks * n]`` matrix one ``[n_in, n]`` gate block at a time.

    Per-block initialisation keeps each gate's matrix at the scale its initializer intends
    (an orthogonal recurrent matrix per gate, as in Flax's and Haiku's LSTMs).
    """
    n_in, n = shape
    keys = jax.random.split(key, blocks)
    return jnp.concatenate([init_fn(k, (n_in, n), dtype) for k in keys], axis=-1)


def matmul(x: Array, w: Array, compute_dtype: DType | None, out_dtype: DType) -> Array:
    """``x @ w`` in ``compute_dtype`` (default: ``w``'s), accumulated and returned in
    ``out_dtype``."""
    cdt = w.dtype if compute_dtype is None else compute_dtype
    return jnp.matmul(x.astype(cdt), w.astype(cdt), preferred_element_type=out_dtype)


def affine(xs: Array, w: Array, b: Array | None, compute_dtype: DType | None) -> Array:
    """``xs @ w + b`` as the cells' input projections compute it.

    Args:
      xs: inputs ``[..., I]``.
      w: weights ``[I, K]``.
      b: bias ``[K]`` or None.
      compute_dtype: matmul dtype (None: ``w``'s).

    Returns:
      ``[..., K]`` in the accumulation dtype of ``w`` (see :func:`accum_dtype`).
    """
    acc = accum_dtype(w.dtype)
    a = matmul(xs, w, compute_dtype, acc)
    return a if b is None else a + b.astype(acc)


def sigmoid(x: Array) -> Array:
    """The logistic function as ``(1 + tanh(x / 2)) / 2``, the form every gate uses.

    XLA:CPU's ``tanh`` is a vectorised rational approximation, faster inside a recurrence than
    the exp-and-divide expansion of ``jax.nn.sigmoid``; the fused kernels rely on the same form
    to compute all gate activations with one ``tanh``. Mathematically identical.
    """
    return 0.5 * jnp.tanh(0.5 * x) + 0.5


def accum_dtype(dtype: DType) -> DType:
    """Dtype for pre-activations and default carries: float64 for float64, else float32.

    Written out rather than via ``jnp.promote_types``, which refuses mixed widths under strict
    dtype promotion.
    """
    wide = jnp.dtype(dtype) == jnp.float64
    return jnp.dtype(jnp.float64) if wide else jnp.dtype(jnp.float32)


# Shared initializers: module-level instances so that two default-constructed cells compare and
# hash equal (a fresh closure per cell would make jit recompile for identical definitions).
glorot_uniform = jax.nn.initializers.glorot_uniform()
orthogonal = jax.nn.initializers.orthogonal()
zeros = jax.nn.initializers.zeros
