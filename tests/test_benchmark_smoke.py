"""Smoke run of ``python -m benchmarks.rnn --quick``: every entry runs and the outputs are sane.

Timings at these tiny shapes mean nothing; the test checks that every implementation builds and
runs, that FLOP and ratio bookkeeping is consistent, and that the JSON and PNG are written.
"""

from __future__ import annotations

import json
import math

import jax
import numpy as np
import pytest

pytest.importorskip("matplotlib")

from benchmarks.rnn import impls, parallel_forms, timing, workloads  # noqa: E402
from benchmarks.rnn.__main__ import main  # noqa: E402

# The parallel-forms section takes its cells from data; two forms of one cell and one baseline
# keep the smoke run's compilations few.
SMOKE_CELLS = {
    "mingru": parallel_forms.Forms(
        parallel_forms.CELLS["mingru"].build, {"parallel": "parallel", "sequential": "sequential"}
    )
}


@pytest.fixture(scope="module")
def quick_result(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(parallel_forms, "CELLS", SMOKE_CELLS)
        mp.setattr(parallel_forms, "BASELINES", {"lstm": parallel_forms.BASELINES["lstm"]})
        result = main(["--quick", "--out", str(out)])
    return out, result


def test_quick_run_writes_json_and_png(quick_result):
    out, result = quick_result
    on_disk = json.loads((out / "rnn.json").read_text())
    assert on_disk["layers"] == json.loads(json.dumps(result["layers"]))
    png = (out / "rnn.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_every_entry_ran_both_workloads(quick_result):
    _, result = quick_result
    rows = result["layers"]
    for kind in ("lstm", "gru"):
        names = set(impls.entries(kind))
        assert {"seqjax fused", "seqjax reference"} <= names
        for workload in ("train", "infer"):
            got = {r["impl"] for r in rows if r["kind"] == kind and r["workload"] == workload}
            assert got == names, (kind, workload, got ^ names)
    for r in rows:
        assert r["ms"] > 0 and math.isfinite(r["ms"]) and r["runs"] >= 1
        flops = timing.matmul_flops(
            r["kind"], r["B"], r["T"], r["I"], r["H"], r["workload"] == "train"
        )
        assert r["gflops"] == pytest.approx(flops / (r["ms"] / 1e3) / 1e9)
        assert r["roofline_frac"] == pytest.approx(r["gflops"] / result["roofline"]["gflops"])


def test_ratios_generation_and_scaling_are_consistent(quick_result):
    _, result = quick_result
    by_key = {(r["kind"], r["workload"], r["impl"]): r["ms"] for r in result["layers"]}
    for q in result["ratios"]:
        want = (
            by_key[(q["kind"], q["workload"], q["versus"])]
            / by_key[(q["kind"], q["workload"], "seqjax fused")]
        )
        assert q["speedup"] == pytest.approx(want)
    gen = result["generation"]
    assert gen["seqjax_ms_per_token"] > 0
    if "torch_loop_ms_per_token" in gen:
        assert gen["speedup"] == pytest.approx(
            gen["torch_loop_ms_per_token"] / gen["seqjax_ms_per_token"]
        )
    sc = result["scaling"]
    assert sc["T"] == workloads.make_config(True, None).scaling_T
    assert len(sc["seqjax_fused_ms"]) == len(sc["T"])
    rem = sc["remat"]
    # chunked remat keeps [sqrt(T)] steps of activations instead of [T]: less compiled memory
    assert rem["remat"]["temp_mb"] < rem["no_remat"]["temp_mb"]
    assert rem["memory_ratio"] == pytest.approx(
        rem["remat"]["peak_mb"] / rem["no_remat"]["peak_mb"]
    )


def test_targets_summarise_the_issue_goals(quick_result):
    _, result = quick_result
    names = [t["name"] for t in result["targets"]]
    assert any("speed vs torch nn.LSTM" in n for n in names)
    assert any("remat peak memory" in n for n in names)
    for t in result["targets"]:
        assert isinstance(t["met"], bool) and math.isfinite(t["value"])
    gen = next(t for t in result["targets"] if t["name"].startswith("generation"))
    assert gen["met"] == (result["generation"]["speedup"] >= 3)


def test_recurrent_floor_covers_every_shape(quick_result):
    _, result = quick_result
    floor = result["recurrent_floor"]
    cfg = workloads.make_config(True, None)
    assert {(f["kind"], f["B"], f["T"], f["I"], f["H"]) for f in floor} == {
        (k, *s) for k in ("lstm", "gru") for s in cfg.shapes
    }
    for f in floor:
        for lib in ("xla", "torch", "torch_1thread"):
            if f"{lib}_us" not in f:
                continue
            N = timing.GATES[f["kind"]] * f["H"]
            assert f[f"{lib}_gflops"] == pytest.approx(
                2 * f["B"] * f["H"] * N / (f[f"{lib}_us"] * 1e-6) / 1e9
            )
            assert f[f"{lib}_floor_ms"] == pytest.approx(2 * f["T"] * f[f"{lib}_us"] / 1e3)


def test_eigen_dots_entry_matches_fused_values():
    # the compiler option changes which matmul library XLA:CPU calls, not the numbers
    if not impls.eigen_dots_supported():
        pytest.skip("XLA:CPU with the Eigen-dots option is not this backend")
    xs = np.random.default_rng(0).standard_normal((2, 5, 3)).astype(np.float32)
    base = impls.seqjax_impl("lstm", "fused")(2, 5, 3, 4, xs)
    eig = impls.seqjax_impl("lstm", "fused", impls.EIGEN_DOTS)(2, 5, 3, 4, xs)
    for a, b in zip(base, eig, strict=True):
        np.testing.assert_allclose(
            np.asarray(jax.tree_util.tree_leaves(a())[0]),
            np.asarray(jax.tree_util.tree_leaves(b())[0]),
            rtol=1e-5,
            atol=1e-6,
        )


def test_parallel_forms_section(quick_result, capsys):
    out, result = quick_result
    section = result["parallel_forms"]
    cfg = workloads.make_config(True, None)
    got = {(r["entry"], r["workload"], r["T"]) for r in section["rows"]}
    entries = ("lstm fused", "mingru parallel", "mingru sequential")
    assert got == {(e, w, T) for e in entries for w in ("train", "infer") for T in cfg.parallel_T}
    ms = {(r["entry"], r["workload"], r["T"]): r["ms"] for r in section["rows"]}
    for s in section["speed_vs_lstm"]:
        assert s["form"] == ("sequential" if jax.default_backend() == "cpu" else "parallel")
        want = (
            ms[("lstm fused", s["workload"], s["T"])]
            / ms[
                (f"mingru {s['form']}",)
                + (
                    s["workload"],
                    s["T"],
                )
            ]
        )
        assert s["speedup"] == pytest.approx(want)
    assert set(section["crossover"]) == {"mingru"}
    # a --sections run writes its own JSON and leaves rnn.json alone
    with pytest.raises(SystemExit):
        main(["--quick", "--out", str(out), "--sections", "layers,nonsense"])
    assert "--sections: expected a comma-separated subset" in capsys.readouterr().err


def test_crossover_is_the_start_of_the_parallel_tail():
    def rows(par, seq):
        return [
            dict(entry=f"mingru {form}", workload=w, T=T, ms=ms)
            for form, times in (("parallel", par), ("sequential", seq))
            for T, ms in zip((8, 16, 32, 64), times, strict=True)
            for w in ("train", "infer")
        ]

    cells = {"mingru": parallel_forms.CELLS["mingru"]}
    # parallel wins at 16, loses at 32, wins at 64: the crossover is 64, not 16
    assert parallel_forms.crossovers(rows([2, 1, 3, 1], [1, 2, 2, 2]), cells)["mingru"] == {
        "train": 64,
        "infer": 64,
    }
    assert parallel_forms.crossovers(rows([2, 2, 2, 2], [1, 1, 1, 1]), cells)["mingru"] == {
        "train": None,
        "infer": None,
    }


def test_flop_count_matches_hand_count():
    # LSTM, B=2, T=3, I=5, H=7: forward 2*T*B*4H*(I+H); training adds dW (same) and dh (H*H)
    fwd = 2 * 3 * 2 * 28 * 12
    assert timing.matmul_flops("lstm", 2, 3, 5, 7, False) == fwd
    assert timing.matmul_flops("lstm", 2, 3, 5, 7, True) == 2 * fwd + 2 * 3 * 2 * 28 * 7
    assert timing.matmul_flops("gru", 2, 3, 5, 7, False) == 2 * 3 * 2 * 21 * 12


def test_markdown_report_lists_every_row(quick_result):
    from benchmarks import report

    _, result = quick_result
    text = report.markdown(json.loads(json.dumps(result)))
    table_rows = [
        line
        for line in text.splitlines()
        if line.startswith(("| LSTM | train", "| LSTM | infer", "| GRU | train", "| GRU | infer"))
    ]
    assert len(table_rows) == len(result["layers"])
    floor_rows = [
        line for line in text.splitlines() if line.startswith(("| LSTM | 4,", "| GRU | 4,"))
    ]
    assert len(floor_rows) == len(result["recurrent_floor"])
    assert "Remat" in text and "Generation" in text


def test_mingru_vs_lstm_ab_quick(tmp_path, capsys):
    from benchmarks.rnn import mingru_vs_lstm

    result = mingru_vs_lstm.main(["--quick", "--reps", "2", "--out", str(tmp_path)])
    assert result["ratios"] == pytest.approx(
        [a / b for a, b in zip(result["seconds"]["lstm"], result["seconds"]["mingru"], strict=True)]
    )
    assert result["median_ratio"] == pytest.approx(float(np.median(result["ratios"])))
    on_cpu = jax.default_backend() == "cpu"
    assert result["kernels"] == {"lstm": "fused", "mingru": "sequential" if on_cpu else "parallel"}
    assert json.loads((tmp_path / "mingru_vs_lstm.json").read_text())["ratios"] == result["ratios"]
    assert "median ratio LSTM/MinGRU" in capsys.readouterr().out
