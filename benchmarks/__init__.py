"""Side-by-side benchmarks of seqjax against other libraries (run ``python -m benchmarks.rnn``)."""
