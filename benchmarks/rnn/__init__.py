"""Recurrent layers side by side: seqjax (fused and reference paths), Flax, Equinox, PyTorch.

Run ``python -m benchmarks.rnn`` (about 3-4 minutes on an idle 2-core CPU) or ``--quick``
(tiny shapes, seconds; what the test suite runs). Everything is measured in one process on the
same shapes, dtype (float32) and inputs, as medians of repeated runs after a warm-up (JAX
functions are compiled before timing), and reported as ratios measured in the same run:

- **training step** (forward + backward of ``mean(ys**2)`` w.r.t. the parameters) and
  **inference** (forward) for one LSTM and one GRU layer at ``(B, T, I, H)`` =
  (32, 128, 128, 256), (64, 64, 256, 512), (16, 256, 512, 1024);
- **roofline**: float32 matmul GFLOP/s of the machine (the best of XLA and PyTorch on a large
  square matmul, measured in this run) and each entry's achieved GFLOP/s as a fraction of it.
  FLOPs count only the matmuls every implementation must do: forward ``2 T B G H (I + H)``;
  training adds the weight gradients ``2 T B G H (I + H)`` and the recurrent input gradients
  ``2 T B G H H`` (``G`` = 4 for LSTM, 3 for GRU);
- **recurrent matmul floor**: the per-step ``[B, H] x [H, G*H]`` matmul timed alone in XLA
  (inside a ``lax.scan``) and in PyTorch; a training step runs it ``2 T`` times in sequence, so
  ``2 T t_step`` bounds any implementation on that matmul library from below;
- **generation** latency per token at B = 1, H = 512 (embedding, LSTM, softmax readout,
  sampling): ``seqjax.decode.generate`` (one compiled ``lax.scan``) against a PyTorch
  per-token Python loop;
- **scaling**: LSTM training time versus T (128 ... 4096) at B = 32, I = H = 256, and compiled
  peak memory (XLA's buffer assignment) and time with and without ``remat`` at T = 4096,
  B = 32, I = H = 512;
- **parallel forms** (:mod:`benchmarks.rnn.parallel_forms`): the parallel-in-time and sequential
  forms of MinGRU, MinLSTM and mLSTM against T (64 ... 16,384) at B = 8, I = H = 256, forward
  and forward + backward, beside the fused LSTM and GRU, with the crossover (if any).

``--sections layers,floor,generation,scaling,parallel`` runs a subset (written to
``rnn_<sections>.json``). ``python -m benchmarks.rnn.mingru_vs_lstm`` is the issue's A/B of a
MinGRU against an LSTM training step (B=8, T=4096, H=256), alternating in one process.

Outputs: a table on stdout, ``rnn.json`` and ``rnn.png`` in ``--out`` (default
``benchmarks/results``).
"""
