"""The benchmarks: seconds per epoch of every way the book trains its MLP and its CNN,
the opt-in CPU speed paths (:mod:`companion.fast`), and the peers (numpy, PyTorch),
against the compute floor. ``python -m companion.bench`` prints the tables
(:mod:`companion.bench.__main__`); the performance appendix, *Where the time goes*,
runs them.

- :mod:`companion.bench.tables` — the table row, paired rounds, the measured matmul
  throughput, the table formats;
- :mod:`companion.bench.mlp` — the MLP's SGD epoch every way, and batch sizes;
- :mod:`companion.bench.cnn` — the CNN's Adam steps every way;
- :mod:`companion.bench.peers` — the same epoch in numpy and in PyTorch.

Nothing else in :mod:`companion` imports this subpackage.
"""
