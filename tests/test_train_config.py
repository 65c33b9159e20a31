"""seqjax.train.config: command-line overrides, types, JSON round trips, errors."""

from __future__ import annotations

import dataclasses
import json
from typing import Optional

import pytest
from hypothesis import given
from hypothesis import strategies as st

from seqjax import train


@dataclasses.dataclass(frozen=True)
class _Model:
    hidden_size: int = 8
    layers: int = 1


@dataclasses.dataclass(frozen=True)
class _Cfg(train.TrainConfig):
    model: _Model = dataclasses.field(default_factory=_Model)
    sizes: tuple[int, ...] = (1, 2)
    dropout: Optional[float] = None  # noqa: UP045 - checks typing.Optional parsing too
    name: str = "run"


def test_config_overrides_types_and_round_trip():
    cfg = train.parse_config(
        _Cfg,
        [
            "--learning_rate=3e-3",
            "--total_steps",
            "20",
            "--progress",
            "false",
            "--async_checkpointing",
            "--model.hidden_size",
            "16",
            "--sizes",
            "4,5,6",
            "--dropout",
            "0.25",
            "--name=x=y",
            "--warmup-steps",
            "7",
        ],
    )
    assert cfg.learning_rate == 3e-3 and isinstance(cfg.learning_rate, float)
    assert cfg.total_steps == 20 and cfg.progress is False and cfg.async_checkpointing is True
    assert cfg.model == _Model(hidden_size=16) and cfg.sizes == (4, 5, 6)
    assert cfg.dropout == 0.25 and cfg.name == "x=y" and cfg.warmup_steps == 7
    assert train.parse_config(cfg, ["--dropout", "none"]).dropout is None
    assert train.parse_config(_Cfg, ["--sizes", "[3, 4]"]).sizes == (3, 4)
    d = train.config_to_dict(cfg)
    assert json.loads(json.dumps(d)) == d
    assert train.config_from_dict(_Cfg, d) == cfg
    lines = dict(line.split(": ", 1) for line in train.format_config(cfg).splitlines())
    assert lines["model.hidden_size".ljust(len(max(lines, key=len)))] == "16"
    assert train.config_diff(train.config_to_dict(_Cfg()), d)["model.hidden_size"] == (8, 16)


@given(
    total_steps=st.integers(0, 10**9),
    lr=st.floats(1e-9, 10.0),
    flag=st.booleans(),
    sizes=st.lists(st.integers(-50, 50), max_size=4),
    name=st.text(st.characters(categories=("L", "N")), min_size=1, max_size=8),
)
def test_config_override_round_trip_property(total_steps, lr, flag, sizes, name):
    argv = [
        f"--total_steps={total_steps}",
        "--learning_rate",
        repr(lr),
        "--progress",
        str(flag).lower(),
        f"--sizes={json.dumps(sizes)}",
        "--name",
        name,
    ]
    cfg = train.parse_config(_Cfg, argv)
    assert (cfg.total_steps, cfg.learning_rate, cfg.progress, cfg.sizes, cfg.name) == (
        total_steps,
        lr,
        flag,
        tuple(sizes),
        name,
    )
    assert train.config_from_dict(_Cfg, json.loads(json.dumps(train.config_to_dict(cfg)))) == cfg


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match=r"unknown config key 'lr'; valid keys: .*learning_rate"):
        train.parse_config(_Cfg, ["--lr", "0.1"])
    with pytest.raises(ValueError, match="unknown config key 'model.depth'.*model.hidden_size"):
        train.parse_config(_Cfg, ["--model.depth", "2"])
    with pytest.raises(ValueError, match="--total_steps expects an int, got 'ten'"):
        train.parse_config(_Cfg, ["--total_steps", "ten"])
    with pytest.raises(ValueError, match="--progress expects a bool"):
        train.parse_config(_Cfg, ["--progress=maybe"])
    with pytest.raises(ValueError, match="--total_steps needs a value"):
        train.parse_config(_Cfg, ["--total_steps"])
    with pytest.raises(ValueError, match="expected --key value"):
        train.parse_config(_Cfg, ["total_steps=3"])
    with pytest.raises(ValueError, match="unknown config key"):
        train.config_from_dict(_Cfg, {"nope": 1})
    with pytest.raises(TypeError, match="expects an int"):
        train.config_from_dict(_Cfg, {"total_steps": "3"})
