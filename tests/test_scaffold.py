"""experiments/scaffold: config fields as options, one-line errors, checks, results, grids."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Optional

import pytest
from hypothesis import given
from hypothesis import strategies as st

from experiments import scaffold
from experiments.scaffold import ArgumentParser, UsageError, config_from_argv
from seqjax import train


@dataclasses.dataclass(frozen=True)
class _Cfg(train.TrainConfig):
    sizes: tuple[int, ...] = (1, 2)
    dropout: Optional[float] = None  # noqa: UP045 - checks typing.Optional parsing too
    name: str = "run"


def test_config_fields_are_options_with_their_types():
    cfg = config_from_argv(
        _Cfg(),
        [
            "--learning_rate=3e-3",
            "--total-steps",
            "20",
            "--progress",
            "false",
            "--async_checkpointing",
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
    assert cfg.sizes == (4, 5, 6) and cfg.dropout == 0.25 and cfg.name == "x=y"
    assert cfg.warmup_steps == 7 and cfg.seed == 0  # untouched fields keep their values
    assert config_from_argv(cfg, ["--dropout", "none"]).dropout is None
    assert config_from_argv(cfg, []) == cfg


@given(
    total_steps=st.integers(0, 10**9),
    lr=st.floats(1e-9, 10.0),
    flag=st.booleans(),
    sizes=st.lists(st.integers(-50, 50), min_size=1, max_size=4),
    name=st.text(st.characters(categories=("L", "N")), min_size=1, max_size=8),
)
def test_config_options_round_trip_property(total_steps, lr, flag, sizes, name):
    argv = [
        f"--total_steps={total_steps}",
        "--learning-rate",
        repr(lr),
        "--progress",
        str(flag).lower(),
        f"--sizes={','.join(map(str, sizes))}",
        "--name",
        name,
    ]
    cfg = config_from_argv(_Cfg(), argv)
    assert (cfg.total_steps, cfg.learning_rate, cfg.progress, cfg.sizes, cfg.name) == (
        total_steps,
        lr,
        flag,
        tuple(sizes),
        name,
    )


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--lr", "0.1"], "unrecognized arguments: --lr 0.1"),
        (["--total_steps", "ten"], "argument --total-steps: expected an int, got 'ten'"),
        (["--progress=maybe"], "argument --progress: expected true/false/1/0/yes/no"),
        (["--total_steps"], "argument --total-steps: expected one argument"),
        (["total_steps=3"], "unrecognized arguments: total_steps=3"),
    ],
)
def test_option_errors_are_one_line_exit_2(capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        config_from_argv(_Cfg(), argv, prog="demo")
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"demo: error: {message}"), err


def _app():
    top = ArgumentParser(prog="app")
    subs = scaffold.add_subcommands(top)
    p = subs.add_parser("go")
    p.add_argument("--n", type=int, default=1)

    def go(args):
        scaffold.at_least("--n", args.n, 1)
        if args.n == 99:
            raise RuntimeError("a bug")
        return args.n, args.command_line

    p.set_defaults(handler=go)
    return top


def test_run_dispatches_and_turns_usage_errors_into_one_line(capsys):
    assert scaffold.run(_app(), ["go", "--n", "3"]) == (3, "app go --n 3")
    assert scaffold.run(_app(), ["--n", "4"], default_command="go") == (4, "app go --n 4")
    with pytest.raises(SystemExit) as e:
        scaffold.run(_app(), ["go", "--n", "0"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err == "app go: error: --n: expected a number >= 1, got 0 (see --help)\n"
    with pytest.raises(SystemExit) as e:
        scaffold.run(_app(), ["stop"])
    assert e.value.code == 2 and "invalid choice: 'stop'" in capsys.readouterr().err
    with pytest.raises(RuntimeError, match="a bug"):  # a bug keeps its traceback
        scaffold.run(_app(), ["go", "--n", "99"])
    with pytest.raises(SystemExit) as e:
        scaffold.run(_app(), [])
    assert e.value.code == 0 and "go" in capsys.readouterr().out


def test_checks(tmp_path):
    a_file = tmp_path / "f.txt"
    a_file.write_text("x")
    assert scaffold.check_output_dir("--out", tmp_path / "new" / "deeper") == str(
        tmp_path / "new" / "deeper"
    )
    assert not (tmp_path / "new").exists()  # checks create nothing
    with pytest.raises(UsageError, match="--out: expected a directory, got the file"):
        scaffold.check_output_dir("--out", a_file)
    with pytest.raises(UsageError, match="is a file"):
        scaffold.check_output_dir("--out", a_file / "run")
    with pytest.raises(UsageError, match="made by `make it`, got nothing at"):
        scaffold.check_run_dir("--workdir", tmp_path / "none", ["a"], "make it")
    with pytest.raises(UsageError, match="without a, b"):
        scaffold.check_run_dir("--workdir", tmp_path, ["a", "b", "f.txt"], "make it")
    scaffold.in_range("--p", 1.0, 0, 1)
    with pytest.raises(UsageError, match=r"expected a value in \[0, 1\), got 1.0"):
        scaffold.in_range("--p", 1.0, 0, 1, closed_high=False)
    assert issubclass(UsageError, ValueError)


def test_grid_and_outputs_and_replot(tmp_path):
    logged = []
    rows, wall = scaffold.run_grid(
        {"a": [1, 2], "b": ["x", "y"]},
        lambda a, b: {"a": a, "b": b, "big": [0] * 3},
        log=logged.append,
        summary=lambda r: {"a": r["a"], "b": r["b"]},
    )
    assert [(r["a"], r["b"]) for r in rows] == [(1, "x"), (1, "y"), (2, "x"), (2, "y")]
    assert json.loads(logged[1]) == {"a": 1, "b": "y"} and wall >= 0

    def markdown(p):
        return "\n".join(scaffold.markdown_table(["a", "b"], [[r["a"], r["b"]] for r in p["runs"]]))

    def figure(p, path):
        plt = scaffold.pyplot()
        fig, ax = plt.subplots()
        ax.plot([r["a"] for r in p["runs"]])
        fig.savefig(path)
        plt.close(fig)

    payload = {"command": "cmd", "runs": rows}
    scaffold.write_outputs(tmp_path / "out", "t", payload, markdown, figure)
    assert json.loads((tmp_path / "out" / "t.json").read_text()) == payload
    md = (tmp_path / "out" / "t.md").read_text()
    assert md.splitlines()[:3] == ["| a | b |", "|---|---|", "| 1 | x |"]
    os.remove(tmp_path / "out" / "t.md")
    assert scaffold.replot(tmp_path / "out", "t", markdown, figure) == payload
    assert (tmp_path / "out" / "t.md").read_text() == md
    assert (tmp_path / "out" / "t.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(UsageError, match="run without --replot first"):
        scaffold.replot(tmp_path / "out", "missing", markdown)
