"""Bad input and faults (issue 23): each case gets a clear error at the call that caused it, and
leaves nothing unusable, lost or duplicated. docs/guarantees.md lists the promises these check."""

import copy
import json
import math
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from lhopt.control import LearnedOptimizer, save_policy_file
from lhopt.control.policy_file import load_policy


def setup(seed=0, shape=(6, 32)):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(shape[0], shape[1]), nn.Tanh(), nn.Linear(shape[1], 1))
    g = torch.Generator().manual_seed(seed)
    data = [
        (torch.randn(16, shape[0], generator=g), torch.randn(16, 1, generator=g)) for _ in range(40)
    ]
    return model, data


def one_step(model, opt, batch, report=True):
    x, y = batch
    loss = nn.functional.mse_loss(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    if report:
        opt.report(train_loss=loss)
    return loss


def counters(opt):
    return opt.steps, opt.skipped_steps, opt._taken, len(opt.history)


# -- LearnedOptimizer: losses --------------------------------------------------------------

NOT_LOSSES = [
    ("abc", "'abc'"),
    ("0.5", "'0.5'"),  # a string is not a loss, whatever it spells
    (torch.ones(3), "shape (3,)"),
    (torch.tensor(1.0 + 2.0j), "complex"),
    ([0.5], "[0.5]"),
    (True, "True"),
]


def test_report_refuses_what_is_not_a_loss_and_records_nothing(policy_file):
    model, data = setup()
    opt = LearnedOptimizer(model.parameters(), total_steps=40, policy=policy_file, decisions=5)
    reference_model, _ = setup()
    reference = LearnedOptimizer(
        reference_model.parameters(), total_steps=40, policy=policy_file, decisions=5
    )
    for i, batch in enumerate(data[:20]):
        one_step(model, opt, batch)
        one_step(reference_model, reference, batch)
        if i == 10:
            for arg in ("train_loss", "val_loss"):
                for bad, shown in NOT_LOSSES:
                    with pytest.raises(ValueError) as info:
                        opt.report(**{arg: bad})
                    message = str(info.value)
                    assert message.startswith(f"{arg}=") and shown in message, message
                    assert "loss is a real number or a one-element real tensor" in message
    # Nothing of the bad calls was recorded: the run decides as one without them.
    assert len(opt.history) == 3 and opt.history == reference.history
    for a, b in zip(model.parameters(), reference_model.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("bad, shown", [(None, "None"), *NOT_LOSSES])
def test_val_loss_fn_results_are_checked_and_a_bad_one_loses_nothing(policy_file, bad, shown):
    model, data = setup()
    answer = {"value": 1.0}
    opt = LearnedOptimizer(
        model.parameters(),
        total_steps=40,
        policy=policy_file,
        decisions=5,
        val_loss_fn=lambda: answer["value"],
    )
    for batch in data[:8]:  # decisions before steps 0 and 8
        one_step(model, opt, batch)
    answer["value"] = bad
    before = counters(opt)
    with pytest.raises(ValueError) as info:
        one_step(model, opt, data[8])
    assert str(info.value).startswith("val_loss_fn() returned ") and shown in str(info.value)
    assert counters(opt) == before  # no step, no decision, nothing counted
    answer["value"] = 2.0  # the user fixes the function: the same step goes on
    one_step(model, opt, data[8])
    assert [h["step"] for h in opt.history] == [0, 8]
    # The train losses reported before the failed call were kept for the decision.
    assert opt.history[-1]["train_loss"] is not None and opt.history[-1]["val_loss"] == 2.0


def test_nan_and_inf_losses_are_recorded_as_divergence(policy_file):
    """Not errors: a NaN or inf loss is what a diverging run reports, and the policy has
    features for it (`train/is_nan`, `val/is_inf`)."""
    model, data = setup()
    opt = LearnedOptimizer(
        model.parameters(),
        total_steps=40,
        policy=policy_file,
        decisions=5,
        val_loss_fn=lambda: torch.tensor(math.inf),
    )
    for batch in data[:9]:
        one_step(model, opt, batch, report=False)
        opt.report(train_loss=torch.tensor(math.nan))
    opt.report(train_loss=np.float32(0.5), val_loss=np.array([0.25]))  # NumPy scalars are fine
    assert math.isnan(opt.history[-1]["train_loss"]) and opt.history[-1]["val_loss"] == math.inf


# -- LearnedOptimizer: load_state_dict and failed steps -------------------------------------


def trained(policy, shape=(6, 32), steps=12):
    model, data = setup(0, shape)
    opt = LearnedOptimizer(
        model.parameters(), total_steps=40, policy=policy, decisions=5, model=model
    )
    for batch in data[:steps]:
        one_step(model, opt, batch)
    return model, opt, data


def assert_untouched_and_usable(model, opt, data, before_state):
    """A refused load changed nothing: the optimizer's state is as before and it trains on."""
    after = opt.state_dict()
    assert after["ciao"]["steps"] == before_state["ciao"]["steps"]
    assert after["controller"]["taken"] == before_state["controller"]["taken"]
    assert after["controller"]["history"] == before_state["controller"]["history"]
    for k, v in before_state["state"].items():
        for name, t in v.items():
            if torch.is_tensor(t):
                assert torch.equal(after["state"][k][name], t)
    for batch in data[12:20]:
        one_step(model, opt, batch)
    assert len(opt.history) == 3 and all(torch.isfinite(p).all() for p in model.parameters())


def test_load_state_dict_refuses_a_state_for_other_parameter_shapes(policy_file):
    model, opt, data = trained(policy_file)
    _, other, _ = trained(policy_file, shape=(4, 8))  # as many tensors, other shapes
    before = copy.deepcopy(opt.state_dict())
    with pytest.raises(ValueError, match=r"made for other parameters.*shape \(32, 6\)"):
        opt.load_state_dict(other.state_dict())
    assert_untouched_and_usable(model, opt, data, before)


def test_load_state_dict_names_model_when_the_registers_hold_another_module(policy_file):
    model, opt, data = trained(policy_file)
    state = opt.state_dict()
    assert any(state["controller"]["registers"]["slots"])  # this run saved a register
    # The same parameters, but without model=: the registers hold the model's state dict.
    bare = LearnedOptimizer(model.parameters(), total_steps=40, policy=policy_file, decisions=5)
    for batch in data[:12]:
        one_step(model, bare, batch)
    before = copy.deepcopy(bare.state_dict())
    with pytest.raises(ValueError, match=r"restart register \d holds another model.*model="):
        bare.load_state_dict(state)
    assert_untouched_and_usable(model, bare, data, before)
    again = LearnedOptimizer(
        model.parameters(), total_steps=40, policy=policy_file, decisions=5, model=model
    )
    again.load_state_dict(state)  # constructed as the one that saved it was
    assert again.state_dict()["controller"]["taken"] == state["controller"]["taken"]


def test_load_state_dict_refuses_a_state_of_another_total_steps(policy_file):
    model, opt, data = trained(policy_file)
    state = opt.state_dict()
    longer = LearnedOptimizer(
        model.parameters(), total_steps=80, policy=policy_file, decisions=5, model=model
    )
    for batch in data[:12]:
        one_step(model, longer, batch)
    before = copy.deepcopy(longer.state_dict())
    with pytest.raises(ValueError, match=r"total_steps=40, this optimizer's is 80.*total_steps=40"):
        longer.load_state_dict(state)
    assert longer.total_steps == 80
    after = longer.state_dict()["controller"]
    assert after["taken"] == 12 and after["history"] == before["controller"]["history"]
    for batch in data[12:20]:  # it trains on as it was
        one_step(model, longer, batch)
    assert longer.state_dict()["controller"]["taken"] == 20


@pytest.mark.parametrize(
    ("total_steps", "steps", "held", "what"),
    [(200, 12, "start", "copy of the run's start"), (100, 40, "best", "copy of the run's best")],
)
def test_load_state_dict_names_model_when_a_kept_copy_holds_another_module(
    total_steps, steps, held, what
):
    """The copies a run starts over from (its first 30%) and falls back to (from its first
    decision) are checked as the registers are: a state saved with model= (a copy held, no
    register filled) does not load without it."""
    model, data = setup(0)
    val = [(torch.randn(16, 6), torch.randn(16, 1))]

    def val_loss():
        with torch.no_grad():
            return nn.functional.mse_loss(model(val[0][0]), val[0][1]).item()

    def make(with_model):
        return LearnedOptimizer(
            model.parameters(),
            total_steps=total_steps,
            val_loss_fn=val_loss,
            model=model if with_model else None,
        )

    opt = make(True)  # the shipped policy starts over and falls back
    for batch in data[:steps]:
        one_step(model, opt, batch)
    state = opt.state_dict()
    assert state["controller"][held] is not None
    assert held == "start" or state["controller"]["start"] is None  # past 30%: freed
    assert not any(state["controller"]["registers"]["slots"])
    with pytest.raises(ValueError, match=rf"{what}.*holds another model.*model="):
        make(False).load_state_dict(state)
    again = make(True)
    again.load_state_dict(state)  # constructed as the one that saved it was
    for batch in data[steps:40]:
        one_step(model, again, batch)
    assert again.state_dict()["controller"]["taken"] == 40


def test_load_state_dict_refuses_a_state_made_with_another_policy(policy_file, tmp_path):
    model, opt, data = trained(policy_file)
    before = copy.deepcopy(opt.state_dict())
    # Another architecture (the shipped policy: a wider LSTM) ...
    _, shipped, _ = trained("default")
    with pytest.raises(ValueError, match="another policy"):
        opt.load_state_dict(shipped.state_dict())
    # ... and the same architecture with other weights.
    net = load_policy(policy_file)
    with torch.no_grad():
        net.heads.bias.add_(1.0)
    save_policy_file(net, tmp_path / "other.pt")
    _, retrained, _ = trained(tmp_path / "other.pt")
    with pytest.raises(ValueError, match="another policy"):
        opt.load_state_dict(retrained.state_dict())
    assert_untouched_and_usable(model, opt, data, before)
    # The optimizer's own state still loads, into a new one as into itself.
    model2, opt2, _ = trained(policy_file, steps=1)
    opt2.load_state_dict(opt.state_dict())
    assert opt2.state_dict()["controller"]["taken"] == opt.state_dict()["controller"]["taken"]


def test_a_failed_step_advances_no_counter_and_the_next_one_decides_once(policy_file):
    model, data = setup()
    opt = LearnedOptimizer(model.parameters(), total_steps=40, policy=policy_file, decisions=5)
    for batch in data[:8]:
        one_step(model, opt, batch)
    before = counters(opt)
    x, y = data[8]
    opt.zero_grad()
    nn.functional.mse_loss(model(x), y).backward()
    first = next(model.parameters())
    dense = first.grad
    first.grad = dense.to_sparse()  # CIAO refuses it, after the decision before step 8
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()
    steps, skipped, taken, decisions = counters(opt)
    assert (steps, skipped, taken) == before[:3]
    assert decisions == before[3] + 1  # the decision before step 8 was taken, once
    first.grad = dense
    opt.step()
    assert [h["step"] for h in opt.history] == [0, 8]  # not decided again
    assert counters(opt)[:3] == (before[0] + 1, before[1], before[2] + 1)


# -- lhopt bench: output and workers checked before any work --------------------------------


@pytest.fixture
def no_benchmark(monkeypatch):
    """`lhopt bench` must stop before this: it stands for the whole benchmark's work."""
    import lhopt.bench

    def run_benchmark(*args, **kwargs):
        raise AssertionError("the benchmark ran")

    monkeypatch.setattr(lhopt.bench, "run_benchmark", run_benchmark)


@pytest.mark.parametrize("where", ["file", "under a file", "unwritable"])
def test_bench_refuses_an_out_it_cannot_write_before_any_work(
    tmp_path, capsys, monkeypatch, no_benchmark, where
):
    from lhopt.cli import main

    file = tmp_path / "results.txt"
    file.write_text("keep me")
    out = {"file": file, "under a file": file / "bench", "unwritable": tmp_path / "ro"}[where]
    if where == "unwritable":  # as root, chmod cannot make a folder unwritable: say it is

        def refuse(self, *args, **kwargs):
            raise PermissionError(13, "Permission denied", str(self))

        monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(SystemExit) as info:
        main(["bench", "--optimizers", "adamw", "--out", str(out), "--no-progress"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"--out {str(out)!r}" in err and "folder" in err
    assert file.read_text() == "keep me"


@pytest.mark.parametrize("workers", ["-3", "0"])
def test_bench_refuses_a_worker_count_below_one(capsys, no_benchmark, workers, tmp_path):
    from lhopt.cli import main

    with pytest.raises(SystemExit) as info:
        main(["bench", "--optimizers", "adamw", "--workers", workers, "--out", str(tmp_path)])
    assert info.value.code == 2
    assert f"--workers {workers} is not allowed" in capsys.readouterr().err


# -- meta-training: a dead run's log ---------------------------------------------------------

QUAD = {
    "family": "quadratic",
    "dim": 20,
    "condition": 100.0,
    "noise": 0.1,
    "batch": 8,
    "budget": 200,
}


def tiny_meta_config(path, **run):
    """A meta-training config whose iterations take about a second."""
    run = {
        "workers": 0,
        "iterations": 1,
        "min_new_transitions": 20,
        "checkpoint_every": 5,
        **run,
    }
    lines = ["[run]", *(f"{k} = {v}" for k, v in run.items())]
    lines.append(f"task = {{ {', '.join(f'{k} = {json.dumps(v)}' for k, v in QUAD.items())} }}")
    lines += ["[policy]", "hidden = 16", "[ppo]", "batch = 20", "buffer = 80"]
    lines += ["[episode]", "min_outer_steps = 10", "max_outer_steps = 10"]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_meta_training_never_appends_to_a_dead_runs_log(tmp_path, tmp_cache, capsys):
    from lhopt.cli import main
    from lhopt.meta import config as meta_config
    from lhopt.meta.train import MetaTrainer

    config = tiny_meta_config(tmp_path / "c.toml")
    out = tmp_path / "run"
    # A run killed after logging iteration 1, before its first checkpoint: what it leaves.
    MetaTrainer(meta_config.load(config), out).train(log_progress=lambda line: None)
    for name in ("checkpoint.pt", "policy.pt", "progress.png"):
        (out / name).unlink()
    lines = (out / "log.jsonl").read_text().splitlines(keepends=True)
    dead = lines[0]
    (out / "log.jsonl").write_text(dead)
    assert json.loads(dead)["iteration"] == 1

    with pytest.raises(SystemExit) as info:
        main(["meta-train", "--config", str(config), "--out", str(out)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"{out} already holds a run (log.jsonl)" in err and "another --out" in err
    assert (out / "log.jsonl").read_text() == dead and not (out / "config.toml").exists()

    with pytest.raises(SystemExit):
        main(["meta-train", "--config", str(config), "--out", str(out), "--resume"])
    assert "stopped before the first checkpoint" in capsys.readouterr().err

    # A program driving the trainer itself is refused as well, before any episode.
    trainer = MetaTrainer(meta_config.load(config), out)
    with pytest.raises(ValueError, match=r"holds the log of another run.*iteration 1"):
        trainer.train(log_progress=lambda line: None)
    assert (out / "log.jsonl").read_text() == dead and trainer.counters["episodes"] == 0


# -- configuration and construction ----------------------------------------------------------


@pytest.mark.parametrize(
    "toml, shown",
    [
        ("[ppo]\nlr = inf", "[ppo] lr = inf must be a finite number"),
        ("[ppo]\nlr = nan", "[ppo] lr = nan must be a finite number"),
        ("[episode]\nreward_clip = -inf", "[episode] reward_clip = -inf must be a finite"),
        ("[ppo]\nlr = 0", "[ppo] lr = 0.0 is not allowed: > 0"),
        ("[ppo]\nmax_grad_norm = 0.0", "[ppo] max_grad_norm = 0.0 is not allowed: > 0"),
        ("[ppo]\nbeta2 = 1.0", "[ppo] beta2 = 1.0 is not allowed: in [0, 1)"),
        ("[ppo]\nmax_sample_reuse = 0", "[ppo] max_sample_reuse = 0 is not allowed: >= 1"),
        ("[run]\nmin_new_transitions = 0", "[run] min_new_transitions = 0 is not allowed: >= 1"),
        ("[run]\neval_seeds = 0", "[run] eval_seeds = 0 is not allowed: >= 1"),
        ("[policy]\nnorm_beta = 1.0", "[policy] norm_beta = 1.0 is not allowed: in [0, 1)"),
        ("[episode]\nreward_clip = 0", "[episode] reward_clip = 0.0 is not allowed: > 0"),
        ("[episode]\nfixed_initial = { lr = -1e-3 }", "[episode] fixed_initial: lr=-0.001"),
        ("[episode]\nfixed_initial = { momentum = 0.9 }", "unknown hyperparameter 'momentum'"),
        ("[episode]\nfixed_initial = { lr_factor = 0.5 }", "unknown hyperparameter 'lr_factor'"),
        ("[episode]\nfixed_initial = { lamb_power = 9.0 }", "fixed_initial: lamb_power=9.0"),
    ],
)
def test_config_values_that_cannot_train_are_refused_naming_key_and_value(tmp_path, toml, shown):
    from lhopt.meta import config as meta_config

    path = tmp_path / "c.toml"
    path.write_text(toml + "\n")
    with pytest.raises(ValueError) as info:
        meta_config.load(path)
    assert shown in str(info.value)


def test_parameters_on_the_meta_device_are_refused_at_construction(policy_file):
    from lhopt.optim import CIAO

    model = nn.Linear(4, 2, device="meta")
    with pytest.raises(ValueError, match=r"shape \(2, 4\) is on the 'meta' device.*to_empty"):
        CIAO(model.parameters())
    with pytest.raises(ValueError, match="'meta' device"):
        LearnedOptimizer(model.parameters(), total_steps=40, policy=policy_file)
    opt = CIAO(nn.Linear(4, 2).parameters())
    with pytest.raises(ValueError, match="'meta' device"):
        opt.add_param_group({"params": model.weight})
    assert len(opt.param_groups) == 1
    # However the parameters come: a generator in a group, (name, tensor) pairs.
    complex_layer = nn.Linear(4, 4, dtype=torch.complex64)
    for params in (
        [{"params": model.parameters()}],
        model.named_parameters(),
        [{"params": complex_layer.parameters()}],
        complex_layer.named_parameters(),
    ):
        with pytest.raises(ValueError, match="'meta' device|complex parameters"):
            LearnedOptimizer(params, total_steps=40, policy=policy_file)
    with pytest.raises(ValueError, match="complex parameters"):
        opt.add_param_group({"params": complex_layer.parameters()})
    assert len(opt.param_groups) == 1
    opt.add_param_group({"params": nn.Linear(2, 2).parameters()})  # still usable
    opt.zero_grad()
    assert len(opt.param_groups) == 2


# -- fault injection: a Ray worker process killed by its pid mid-run -------------------------


def _descendants_titled(prefix: bytes) -> list[int]:
    """Pids of this process's descendants whose title starts with `prefix` (Ray titles a worker
    `ray::<task>` or `ray::<Actor>.<method>` while it runs one, `ray::IDLE` otherwise). Only
    descendants: other Ray instances on the machine are left alone."""
    me, found = os.getpid(), []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if not (d / "cmdline").read_bytes().startswith(prefix):
                continue
        except OSError:
            continue
        pid = int(d.name)
        while pid > 1:
            try:
                stat = (Path("/proc") / str(pid) / "stat").read_text()
                pid = int(stat.rsplit(")", 1)[1].split()[1])  # its parent's pid
            except (OSError, IndexError, ValueError):
                break
            if pid == me:
                found.append(int(d.name))
                break
    return found


class Killer(threading.Thread):
    """Kills (SIGKILL) the first of this process's Ray workers seen running `title`, once
    `armed` is set; `killed` holds its pid."""

    def __init__(self, title: bytes) -> None:
        super().__init__(daemon=True)
        self.title, self.killed, self.stop = title, None, False
        self.armed = threading.Event()
        self.deadline = time.time() + 60

    def run(self) -> None:
        self.armed.wait(60)
        while not self.stop and time.time() < self.deadline:
            pids = _descendants_titled(self.title)
            if pids:
                os.kill(pids[0], signal.SIGKILL)
                self.killed = pids[0]
                return
            time.sleep(0.01)


@pytest.fixture(scope="module")
def ray_two_cpus():
    import ray

    from lhopt.extras import start_ray

    if ray.is_initialized():
        ray.shutdown()
    start_ray(workers=2)
    yield
    ray.shutdown()


def test_bench_a_job_whose_worker_is_killed_is_run_again(ray_two_cpus, tmp_cache):
    from lhopt.bench.runner import execute, job_key, run_job_safe
    from lhopt.tasks import TaskConfig

    config = TaskConfig.make("quadratic", dim=20, condition=100.0, noise=0.3, batch=4, budget=160)
    jobs = [
        {
            "task": "t",
            "config": config.to_dict(),
            "seed": seed,
            "optimizer": "adamw",
            "lr": None,
            "multiple": 1.0,
        }
        for seed in range(3)
    ]
    arrived = []
    killer = Killer(b"ray::_ray_job")
    killer.armed.set()
    killer.start()
    results = execute(jobs, progress=False, on_result=lambda job, r: arrived.append(job_key(job)))
    killer.stop = True
    assert killer.killed is not None  # a worker died under a job
    # Every job has exactly one result, complete, in job order: the killed one was run again.
    assert sorted(arrived) == sorted(job_key(j) for j in jobs) and len(arrived) == len(jobs)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the workers run
    try:
        for job, result in zip(jobs, results, strict=True):
            assert result["error"] is None and result["job"] == job
            assert result["val"] == run_job_safe(job)["val"]  # the curve of a run not killed
    finally:
        torch.set_num_threads(threads)


def test_meta_training_replaces_a_killed_rollout_worker_and_drops_nothing_twice(
    ray_two_cpus, tmp_cache, tmp_path
):
    from lhopt.meta import config as meta_config
    from lhopt.meta.train import MetaTrainer

    cfg = meta_config.load(tiny_meta_config(tmp_path / "c.toml", workers=2, iterations=4))
    trainer = MetaTrainer(cfg, tmp_path / "run")
    killer = Killer(b"ray::_RolloutWorker.run")
    lines = []

    def log(line):
        lines.append(line)
        killer.armed.set()  # after the first iteration: a worker dies under its next episode

    killer.start()
    trainer.train(log_progress=log)
    killer.stop = True
    assert killer.killed is not None
    assert trainer.iteration == 4
    assert sum("worker died" in line for line in lines) == 1  # the killed episode is reported
    rows = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2, 3, 4]
    assert rows[-1]["errors_total"] == trainer.counters["errors"] == 1
    # Each episode that arrived is counted once: the per-iteration counts add up to the total.
    assert sum(r["episodes"] for r in rows) == trainer.counters["episodes"]
