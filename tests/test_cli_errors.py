"""Every command line: a user's mistake is one line on stderr, exit status 2, nothing touched.

The table runs each bad invocation in this process through the CLI's ``main(argv)`` (cheap:
every one fails before anything is compiled); a few run as real subprocesses
(``python -m ...``) to check the same from the outside. Invocations against an existing run
directory check that its listing and modification times stay the same.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import jax.numpy as jnp
import optax
import pytest

from benchmarks.rnn.__main__ import main as bench_main
from experiments import gradient_flow, init_sensitivity, variants
from experiments.char_lm.__main__ import main as char_lm_main
from experiments.char_lm.config import CharLMConfig
from experiments.long_range.__main__ import main as long_range_main
from seqjax import train
from seqjax.data import text as textdata

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXT = "to be or not to be, that is the question\n" * 40
TINY = dict(
    layers=1,
    hidden=8,
    embed=4,
    seq_len=8,
    batch_size=4,
    total_steps=2,
    warmup_steps=0,
    progress=False,
)


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    """Inputs of the table: text files good and bad, an empty dir, a file, and a run dir.

    The run directory is what ``train`` leaves (config, vocabulary, a checkpoint at step 2);
    its checkpoint holds a stand-in state: enough for every check made before a restore, and
    a checkpoint that does not fit the run's model.
    """
    d = tmp_path_factory.mktemp("cli")
    (d / "text.txt").write_text(TEXT, encoding="utf-8")
    (d / "other.txt").write_text(TEXT.upper(), encoding="utf-8")
    (d / "empty.txt").write_bytes(b"")
    (d / "binary.bin").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" * 8)
    (d / "a_file").write_text("not a directory")
    (d / "empty_dir").mkdir()
    run = d / "run"
    run.mkdir()
    config = CharLMConfig(data=str(d / "text.txt"), **TINY)
    (run / "config.json").write_text(json.dumps(train.config_to_dict(config)), encoding="utf-8")
    (run / "vocab.json").write_text(textdata.Vocab.build(TEXT).to_json(), encoding="utf-8")
    state = train.TrainState.create({"w": jnp.zeros((2,), jnp.float32)}, optax.sgd(0.1), 0)
    ckpt = train.Checkpointer(run / "checkpoints", async_save=False)
    ckpt.save(state, step=2, config=config)
    ckpt.close()
    # a run whose text file changed since (same path, other characters)
    changed = d / "changed"
    changed.mkdir()
    (changed / "config.json").write_text(
        json.dumps(train.config_to_dict(dataclasses.replace(config, data=str(d / "other.txt")))),
        encoding="utf-8",
    )
    (changed / "vocab.json").write_text(textdata.Vocab.build(TEXT).to_json(), encoding="utf-8")
    files = {"text": "text.txt", "other": "other.txt", "empty": "empty.txt", "binary": "binary.bin"}
    return {k: str(d / v) for k, v in files.items()} | {
        "file": str(d / "a_file"),
        "empty_dir": str(d / "empty_dir"),
        "run": str(run),
        "changed": str(changed),
        "new": str(d / "new_run"),
    }


def snapshot(path: str) -> dict[str, float]:
    """Every file and folder under ``path`` with its modification time."""
    out = {path: os.stat(path).st_mtime_ns}
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            p = os.path.join(root, name)
            out[p] = os.stat(p).st_mtime_ns
    return out


CL = "python -m experiments.char_lm"
LR = "python -m experiments.long_range"
# (main, argv with {placeholders}, prog of the error line, a piece of the message)
TABLE = [
    # char_lm train: missing, empty, binary, directory text; bad numbers; bad choice
    (char_lm_main, "train --workdir {new} --data /missing.txt", f"{CL} train", "does not exist"),
    (char_lm_main, "train --workdir {new} --data {empty}", f"{CL} train", "is empty"),
    (char_lm_main, "train --workdir {new} --data {binary}", f"{CL} train", "NUL byte"),
    (char_lm_main, "train --workdir {new} --data {empty_dir}", f"{CL} train", "is a directory"),
    (char_lm_main, "train --workdir {new} --hidden -5", f"{CL} train", "--hidden: expected"),
    (char_lm_main, "train --workdir {new} --steps 0", f"{CL} train", "--steps: expected"),
    (char_lm_main, "train --workdir {new} --hidden x", f"{CL} train", "expected an int, got 'x'"),
    (char_lm_main, "train --workdir {new} --cell lstn", f"{CL} train", "invalid choice: 'lstn'"),
    (char_lm_main, "train --workdir {new} --dropout 1", f"{CL} train", "--dropout: expected"),
    (
        char_lm_main,
        "train --workdir {new} --val-fraction 0.6 --test-fraction 0.5",
        f"{CL} train",
        "sum < 1",
    ),
    (char_lm_main, "train --workdir {new} --hiden 4", f"{CL} train", "unrecognized arguments"),
    (char_lm_main, "train --workdir {file}", f"{CL} train", "--workdir: expected a directory"),
    (char_lm_main, "train --workdir {file}/run", f"{CL} train", "is a file"),
    # ... and against an existing run: nothing in it may change
    (char_lm_main, "train --workdir {run} --hidden -5", f"{CL} train", "--hidden: expected"),
    (char_lm_main, "train --workdir {run} --steps 0", f"{CL} train", "--steps: expected"),
    (char_lm_main, "train --workdir {run} --hidden 16", f"{CL} train", "run's own value 8"),
    (char_lm_main, "train --workdir {run} --data {other}", f"{CL} train", "run's own value"),
    (char_lm_main, "train --workdir {run} --data /missing.txt", f"{CL} train", "run's own value"),
    (char_lm_main, "train --workdir {new} --steps 50", f"{CL} train", "--warmup-steps: expected"),
    (
        char_lm_main,
        "train --workdir {run} --batch-size 64 --seq-len 200",
        f"{CL} train",
        "--batch-size",
    ),
    # generate / evaluate / compare
    (char_lm_main, "generate --workdir {empty_dir}", f"{CL} generate", "without config.json"),
    (char_lm_main, "generate --workdir {new}", f"{CL} generate", "got nothing at"),
    (char_lm_main, "generate --workdir {run} --length 0", f"{CL} generate", "--length"),
    (char_lm_main, "generate --workdir {run} --samples -1", f"{CL} generate", "--samples"),
    (char_lm_main, "generate --workdir {run} --top-p 1.5", f"{CL} generate", "--top-p"),
    (char_lm_main, "generate --workdir {run} --step 999", f"{CL} generate", "saved steps [2]"),
    (char_lm_main, "generate --workdir {run}", f"{CL} generate", "does not match the model"),
    (char_lm_main, "evaluate --workdir {empty_dir}", f"{CL} evaluate", "without config.json"),
    (char_lm_main, "evaluate --workdir {run} --step 7", f"{CL} evaluate", "saved steps [2]"),
    (char_lm_main, "compare --root {new} --variants magic", f"{CL} compare", "unknown variants"),
    (char_lm_main, "compare --root {file}", f"{CL} compare", "--root: expected a directory"),
    (char_lm_main, "compare --root {new} --out {file}", f"{CL} compare", "--out: expected"),
    (char_lm_main, "compare --root {new} --steps 0", f"{CL} compare", "--steps: expected"),
    (char_lm_main, "frobnicate", CL, "invalid choice: 'frobnicate'"),
    # long_range: one run and sweeps
    (long_range_main, "--task sorting", f"{LR} train", "invalid choice: 'sorting'"),
    (long_range_main, "--steps 0", f"{LR} train", "--steps: expected a positive int"),
    (long_range_main, "--hidden -5", f"{LR} train", "--hidden: expected"),
    (long_range_main, "--cell lstn --steps 1", f"{LR} train", "unknown cell 'lstn'"),
    (long_range_main, "--budget 10", f"{LR} train", "--budget: expected at least"),
    (long_range_main, "--clip-norm -1", f"{LR} train", "--clip-norm: expected"),
    (long_range_main, "--workdir {file}/run", f"{LR} train", "is a file"),
    (long_range_main, "sweep", f"{LR} sweep", "required: --task"),
    (
        long_range_main,
        "sweep --task adding --replot --out {empty_dir}",
        f"{LR} sweep",
        "run without --replot first",
    ),
    (long_range_main, "sweep --task copy --out {file}", f"{LR} sweep", "--out: expected"),
    (gradient_flow.main, "--out {file}", "python -m experiments.gradient_flow", "--out"),
    (gradient_flow.main, "--quick 1", "python -m experiments.gradient_flow", "unrecognized"),
    (init_sensitivity.main, "--out {file}", "python -m experiments.init_sensitivity", "--out"),
    (
        variants.main,
        "--replot --out {empty_dir}",
        "python -m experiments.variants",
        "run without --replot first",
    ),
    (variants.main, "--out {file}", "python -m experiments.variants", "--out: expected"),
    # the benchmark
    (bench_main, "--repeats 0", "python -m benchmarks.rnn", "--repeats: expected"),
    (bench_main, "--repeats -1 --quick", "python -m benchmarks.rnn", "--repeats: expected"),
    (bench_main, "--out {file}", "python -m benchmarks.rnn", "--out: expected a directory"),
    (bench_main, "--quick --fast", "python -m benchmarks.rnn", "unrecognized arguments"),
]


@pytest.mark.parametrize(
    "main, argv, prog, message", TABLE, ids=[f"{t[0].__module__}:{t[1]}" for t in TABLE]
)
def test_user_error_is_one_line_exit_2(paths, capsys, main, argv, prog, message):
    before = snapshot(paths["run"]), snapshot(paths["changed"])
    with pytest.raises(SystemExit) as e:
        main(argv.format(**paths).split())
    assert e.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if not line.startswith("note: ")]
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), err
    assert message in lines[0], err
    assert (snapshot(paths["run"]), snapshot(paths["changed"])) == before
    assert not os.path.exists(paths["new"])


def test_user_errors_from_the_outside(paths):
    """``python -m ...`` for each CLI (started together: each start imports JAX)."""
    cases = [
        (
            ["experiments.char_lm", "train", "--workdir", paths["new"], "--data", "/missing.txt"],
            f"{CL} train: error: --data",
        ),
        (
            ["experiments.char_lm", "generate", "--workdir", paths["empty_dir"]],
            f"{CL} generate: error: --workdir",
        ),
        (["experiments.long_range", "--steps", "0"], f"{LR} train: error: --steps"),
        (["benchmarks.rnn", "--repeats", "0"], "python -m benchmarks.rnn: error: --repeats"),
    ]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", *argv],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for argv, _ in cases
    ]
    for p, (argv, start) in zip(procs, cases, strict=True):
        out, err = p.communicate(timeout=300)
        assert p.returncode == 2, (argv, err)
        assert "Traceback" not in err and err.count("\n") == 1, (argv, err)
        assert err.startswith(start), (argv, err)
    assert not os.path.exists(paths["new"])
