"""Optional dependencies: what each extra brings, and a clear error when one is missing.

`pip install lhopt` gives the optimizers (torch and numpy); the benchmark, meta-training and the
task families come with `lhopt[bench]`, `lhopt[meta]` (or `lhopt[all]`).
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType


class MissingExtra(ImportError):
    pass


def require(module: str, extra: str) -> ModuleType:
    """Import `module`, or fail with the `pip install` line of the extra that brings it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingExtra(
            f"{module!r} is not installed: it comes with lhopt's {extra!r} extra "
            f"(pip install 'lhopt[{extra}]')"
        ) from e


def start_ray(address: str | None = None, workers: int | None = None, extra: str = "bench"):
    """Join the Ray cluster at `address`, or start an embedded local instance of `workers` CPUs."""
    ray = require("ray", extra)
    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(
            num_cpus=workers or os.cpu_count(),
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
