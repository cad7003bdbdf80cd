"""Benchmarks of predstream: ``python -m bench.run [--size small|full] [--only NAME ...]``.

One module per benchmark (``training_cost``, ``sink_throughput``, ``latency``, ``replay``,
``generation``), each with a ``run(ctx) -> BenchResult``; :mod:`bench.run` starts the
embedded stack, runs them, prints a table and writes the figures as JSON. Figures are
ratios measured side by side in one run: the machines are shared and noisy.
"""
