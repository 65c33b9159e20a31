"""seqjax.train.config: JSON round trips, stable descriptions, the diff shown on resume.

Setting config fields from a command line is the experiments' scaffold's job (argparse):
``tests/test_scaffold.py``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given
from hypothesis import strategies as st

import seqjax
from seqjax import train


@dataclasses.dataclass(frozen=True)
class _Model:
    hidden_size: int = 8
    layers: int = 1


@dataclasses.dataclass(frozen=True)
class _Cfg(train.TrainConfig):
    model: _Model = dataclasses.field(default_factory=_Model)
    sizes: tuple[int, ...] = (1, 2)
    dropout: Optional[float] = None  # noqa: UP045 - checks typing.Optional too
    name: str = "run"


def test_config_dict_round_trip_format_and_diff():
    cfg = _Cfg(
        learning_rate=3e-3,
        total_steps=20,
        progress=False,
        model=_Model(hidden_size=16),
        sizes=(4, 5, 6),
        dropout=0.25,
        name="x=y",
    )
    d = train.config_to_dict(cfg)
    assert d["sizes"] == [4, 5, 6] and d["model"] == {"hidden_size": 16, "layers": 1}
    assert json.loads(json.dumps(d)) == d
    assert train.config_from_dict(_Cfg, d) == cfg
    lines = dict(line.split(": ", 1) for line in train.format_config(cfg).splitlines())
    assert lines["model.hidden_size".ljust(len(max(lines, key=len)))] == "16"
    diff = train.config_diff(train.config_to_dict(_Cfg()), d)
    assert diff["model.hidden_size"] == (8, 16) and diff["dropout"] == (None, 0.25)
    assert "seed" not in diff
    assert train.config_diff({"a": 1}, {"b": 1}) == {"a": (1, "<absent>"), "b": ("<absent>", 1)}


@given(
    total_steps=st.integers(0, 10**9),
    lr=st.floats(1e-9, 10.0),
    flag=st.booleans(),
    sizes=st.lists(st.integers(-50, 50), max_size=4),
    dropout=st.none() | st.floats(0, 1),
    name=st.text(st.characters(categories=("L", "N")), min_size=1, max_size=8),
)
def test_config_json_round_trip_property(total_steps, lr, flag, sizes, dropout, name):
    cfg = _Cfg(
        total_steps=total_steps,
        learning_rate=lr,
        progress=flag,
        sizes=tuple(sizes),
        dropout=dropout,
        name=name,
    )
    d = json.loads(json.dumps(train.config_to_dict(cfg)))
    assert train.config_from_dict(_Cfg, d) == cfg
    assert train.config_diff(d, train.config_to_dict(cfg)) == {}


def test_config_from_dict_errors_are_clear():
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['nope'\].*valid keys"):
        train.config_from_dict(_Cfg, {"nope": 1})
    with pytest.raises(TypeError, match="expects an int"):
        train.config_from_dict(_Cfg, {"total_steps": "3"})
    with pytest.raises(TypeError, match="expects"):
        train.config_from_dict(_Cfg, {"dropout": "high"})
    with pytest.raises(TypeError, match="expected a dataclass instance"):
        train.config_to_dict({"total_steps": 3})


@dataclasses.dataclass(frozen=True)
class _CellCfg(train.TrainConfig):
    cell: seqjax.LSTM = dataclasses.field(default_factory=lambda: seqjax.LSTM(4))
    compute_dtype: object = jnp.float32


def _cell_config(scale: float = 1.0) -> _CellCfg:
    # built anew every call, as a resumed run (another process) builds it: new initializer
    # closures, other memory addresses
    cell = seqjax.LSTM(
        4,
        kernel_init=jax.nn.initializers.glorot_uniform(),
        recurrent_init=jax.nn.initializers.orthogonal(scale=scale),
        param_dtype=jnp.bfloat16,
    )
    return _CellCfg(cell=cell, compute_dtype=jnp.bfloat16, total_steps=7)


def test_dtypes_and_initialisers_are_described_stably():
    d = train.config_to_dict(_cell_config())
    assert d["compute_dtype"] == "bfloat16" and d["cell"]["param_dtype"] == "bfloat16"
    init = d["cell"]["recurrent_init"]
    assert init["function"].endswith("orthogonal.<locals>.init")
    assert init["closure"]["scale"] == 1.0
    assert "0x" not in json.dumps(d)
    assert train.config_to_dict(_CellCfg(compute_dtype=np.dtype("int8")))["compute_dtype"] == "int8"
    part = train.config_to_dict(
        _CellCfg(compute_dtype=functools.partial(jnp.zeros, dtype=jnp.int8))
    )
    assert part["compute_dtype"]["kwargs"] == {"dtype": "int8"}


def test_resumed_run_config_diff_is_empty(tmp_path):
    """The config saved with a checkpoint, compared with the same config built again (as
    ``train_loop`` does on resume), differs nowhere; a real change still shows."""
    state = train.TrainState.create({"w": jnp.zeros((2,), jnp.float32)}, optax.sgd(0.1), 0)
    ckpt = train.Checkpointer(tmp_path / "checkpoints", async_save=False)
    try:
        ckpt.save(state, step=1, config=_cell_config())
        saved = ckpt.config(1)
    finally:
        ckpt.close()
    assert train.config_diff(saved, train.config_to_dict(_cell_config())) == {}
    changed = train.config_diff(saved, train.config_to_dict(_cell_config(scale=2.0)))
    assert changed == {"cell.recurrent_init.closure.scale": (1.0, 2.0)}
