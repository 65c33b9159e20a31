"""seqjax.train.writers: the metrics file across resumes, NaN records, learning-curve PNGs."""

from __future__ import annotations

import os
import warnings

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
