"""Cache of baseline runs: a baseline's curve on a (task config, seed, budget) is computed once.

Baselines are deterministic for a config and seed on one machine, so the benchmark and the
meta-training reward (which reads the `adamw` curves) reuse them; only new optimizers run.

The key holds the job (task config, seed, optimizer, lr, budget) and a fingerprint of the code
that produces the curve (the task interface, the job's task family, the baseline optimizers, the
runner) and of torch's version, so any change to that code invalidates old entries, while adding
or changing another family leaves them valid. A family whose data its code does not reproduce
(speech: eSpeak NG's output varies between syntheses, so each cache folder synthesises its own
corpus once) gives a `data_fingerprint()`, a digest of the data its runs read, which joins the
key: curves from another synthesis, such as a copied cache's, are not reused. Entries are JSON
files written atomically under `<cache dir>/curves/`; a corrupt entry is ignored and recomputed.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from functools import cache
from pathlib import Path

import torch

import lhopt.curves.drivers
import lhopt.curves.run
import lhopt.optim.schedules
import lhopt.tasks
from lhopt.tasks.data import cache_dir

CACHED_OPTIMIZERS = ("adamw", "adamw-cosine", "schedulefree", "prodigy")


SHARED_TASK_FILES = ("base.py", "data.py", "schema.py")  # what every family builds on
# Modules besides its own that a family's runs depend on: data another family's module makes
# (the autoencoder reads MNIST-1D), the shared classification training.
_TASKS = Path(lhopt.tasks.__file__).parent
DATA_MODULES = {
    "autoencoder": (_TASKS / "mnist1d.py",),
    "recsys": (_TASKS / "ncf.py",),
    "texts": (_TASKS / "charlm.py",),  # its models and the archive's source
    "gpt": (_TASKS / "texts.py", _TASKS / "charlm.py"),
    **{f: (_TASKS / "classification.py",) for f in ("shapes", "tokens", "linear", "tabular")},
}


@cache
def code_fingerprint(family: str) -> str:
    h = hashlib.sha256(torch.__version__.encode())
    tasks_dir = Path(lhopt.tasks.__file__).parent
    module = sys.modules[lhopt.tasks.FAMILIES[family][1].__module__]
    files = [tasks_dir / name for name in SHARED_TASK_FILES] + [
        Path(module.__file__),
        *DATA_MODULES.get(family, ()),
        Path(lhopt.curves.drivers.__file__),
        Path(lhopt.curves.run.__file__),
        Path(lhopt.optim.schedules.__file__),
    ]
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def data_fingerprint(family: str) -> str | None:
    """The family module's `data_fingerprint()` (module doc), or None where its code makes its
    data."""
    module = sys.modules[lhopt.tasks.FAMILIES[family][1].__module__]
    digest = getattr(module, "data_fingerprint", None)
    return digest() if digest else None


def _path(job: dict) -> Path:
    from lhopt.tasks import TaskConfig

    config = TaskConfig.from_dict(job["config"])
    fields = {
        "config": config.key(),
        "seed": job["seed"],
        "optimizer": job["optimizer"],
        "lr": job["lr"],
        "multiple": job["multiple"],
        "code": code_fingerprint(config.family),
    }
    if (data := data_fingerprint(config.family)) is not None:
        fields["data"] = data
    key = json.dumps(fields, sort_keys=True)
    return cache_dir() / "curves" / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".json")


def lookup(job: dict) -> dict | None:
    """The cached result of `job`, or None (not cached, not cacheable, or unreadable)."""
    if job["optimizer"] not in CACHED_OPTIMIZERS:
        return None
    path = _path(job)
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return {**result, "job": job, "cached": True}


def store(job: dict, result: dict) -> None:
    """Cache a successful result of a baseline job (crashes are never cached)."""
    if job["optimizer"] not in CACHED_OPTIMIZERS or result.get("error"):
        return
    path = _path(job)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({k: v for k, v in result.items() if k not in ("job", "cached")}))
    tmp.replace(path)
