"""Validation curves of reference runs: the baseline drivers, the run that records a curve, the
cache of baseline curves, and speedups read off curves. Below both the benchmark and
meta-training, which measure against the same curves."""
