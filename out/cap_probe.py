"""level_search.py with LAMB's trust ratio capped above at MAXTRUST (default 1): a tensor never
steps further, in AdamW's units, than the lr; on the tasks named in TASKS only (all if unset)."""
import os, runpy, sys
import lhopt.optim.ciao as ciao
from lhopt.bench import benchmark as bench

M = float(os.environ.get("MAXTRUST", "1"))
_shipped = ciao._trust
ciao._trust = lambda p_norm, ema_hat, power, min_trust: _shipped(p_norm, ema_hat, power, min_trust).clamp(max=M)
keep = set(filter(None, os.environ.get("TASKS", "").split(",")))
_select = bench.select_tasks
bench.select_tasks = lambda suite: {k: v for k, v in _select(suite).items() if not keep or k in keep}
sys.argv = ["level_search.py"] + sys.argv[1:]
runpy.run_path("benchmarks/level_search.py", run_name="__main__")
