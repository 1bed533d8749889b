"""The benchmark: suites of tasks, optimizers side by side, speedups (docs/evaluation.md)."""

from lhopt.bench.benchmark import check_request, run_benchmark
from lhopt.curves.speedup import Speedup, geometric_mean

__all__ = ["Speedup", "check_request", "geometric_mean", "run_benchmark"]
