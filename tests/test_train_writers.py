"""seqjax.train.writers: the metrics file across resumes, NaN records, learning-curve PNGs."""

from __future__ import annotations

import os
import sys
import warnings

import pytest

from seqjax import train


def test_metric_writer_drops_records_past_the_resume_step(tmp_path):
    w = train.MetricWriter(tmp_path, tensorboard=False)
    for s in (3, 6, 9):
        w.write(s, "train", {"loss": float(s)})
    w.close()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 12, "split": "tr')  # torn line of a killed run
    assert [r["step"] for r in train.read_metrics(tmp_path)] == [3, 6, 9]
    w = train.MetricWriter(tmp_path, resume_step=6, tensorboard=False)
    w.write(9, "train", {"loss": 0.5, "bad": float("nan")})
    w.close()
    recs = train.read_metrics(tmp_path)
    assert [(r["step"], r["loss"]) for r in recs] == [(3, 3.0), (6, 6.0), (9, 0.5)]
    assert recs[-1]["bad"] == "nan"
    png = train.plot_curves(tmp_path)
    assert os.path.getsize(png) > 1000
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train.summarize_metrics({"loss_sum": 1.0, "count": 0.0})


def _without(monkeypatch, *packages: str) -> None:
    """Makes ``import <package>`` raise ImportError, as if it were not installed."""
    for name in packages:
        monkeypatch.setitem(sys.modules, name, None)


def test_missing_optional_packages_are_skipped_or_named(tmp_path, monkeypatch):
    assert train.missing_optional_outputs() == {}  # the dev install has both
    _without(monkeypatch, "tensorboardX", "matplotlib")
    assert sorted(train.missing_optional_outputs()) == ["matplotlib", "tensorboardX"]
    # Default: TensorBoard when installed, so here only the JSONL file.
    w = train.MetricWriter(tmp_path)
    assert not w.tensorboard
    w.write(1, "train", {"loss": 2.0})
    w.close()
    assert os.listdir(tmp_path) == ["metrics.jsonl"]
    # Asking for it explicitly names the package.
    with pytest.raises(ImportError, match="needs the tensorboardX package"):
        train.MetricWriter(tmp_path, tensorboard=True)
    with pytest.raises(ImportError, match="plot_curves needs the matplotlib package"):
        train.plot_curves(tmp_path)
    assert train.read_metrics(tmp_path) == [{"step": 1, "split": "train", "loss": 2.0}]
