import json
import math

import numpy as np
import pytest
import torch

from lhopt.bench import benchmark, check_request, run_benchmark
from lhopt.bench import optimizers as baselines
from lhopt.bench.report import write
from lhopt.bench.runner import execute, run_job_safe
from lhopt.cli import main
from lhopt.curves import cache
from lhopt.extras import start_ray
from lhopt.tasks import SUITES, TaskConfig

TINY = {
    "tiny-quadratic": TaskConfig.make(
        "quadratic", dim=20, condition=100.0, noise=0.3, batch=4, budget=40
    ),
    "tiny-xor": TaskConfig.make(
        "algorithmic",
        problem="xor",
        cell="gru",
        layers=1,
        hidden=16,
        dropout=0.0,
        length=4,
        batch=32,
        budget=40,
    ),
}


def job(config, optimizer="adamw", multiple=1.0, lr=None, seed=0):
    return {
        "task": "t",
        "config": config.to_dict(),
        "seed": seed,
        "optimizer": optimizer,
        "lr": lr,
        "multiple": multiple,
    }


@pytest.mark.parametrize(
    "args, words",
    [
        (("nope", ["adamw"], 1), ["unknown suite 'nope'", "validation"]),
        (("quick", ["adamw", "sgd"], 1), ["unknown optimizer 'sgd'", "prodigy"]),
        (("quick", [], 1), ["no optimizers"]),
        (("quick", ["adamw", "adamw"], 1), ["repeat"]),
        (("quick", ["adamw"], 0), ["seeds=0"]),
        (("quick", ["adamw"], 1, ["quick-nope"]), ["unknown task 'quick-nope'", "quick-xor-gru"]),
        (("quick", ["adamw"], 1, []), ["no tasks given", "quick-quadratic"]),
        (("quick", ["adamw"], 1, ["quick-quadratic"] * 2), ["repeat"]),
    ],
)
def test_bad_requests_fail_before_any_work(args, words):
    with pytest.raises(ValueError) as info:
        check_request(*args)
    for w in words:
        assert w in str(info.value)


def test_cli_refuses_an_unknown_suite_with_the_valid_ones(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--suite", "imagenet"])
    err = capsys.readouterr().err
    assert "imagenet" in err and "quick" in err and "ood" in err


def test_a_run_records_curve_metrics_and_trajectory():
    r = run_job_safe(job(TINY["tiny-quadratic"], "adamw-cosine", multiple=1.5))
    assert r["error"] is None and not r["diverged"]
    assert r["steps"] == [0] + [2 * i for i in range(1, 31)]
    assert r["val"][-1] < r["val"][0]
    assert set(r["test_at_T"]) == {"loss"} and "test_final" in r
    assert r["hparams"]["lr"][-1] == pytest.approx(0.0, abs=1e-12)  # cosine decayed to zero
    assert 0 < r["train_time_at_T"] < r["train_time"]


def test_a_diverging_run_is_reported_and_scores_zero(monkeypatch):
    def exploding(model, budget, lr):
        class Explode(torch.optim.SGD):
            def step(self, closure=None):
                for g in self.param_groups:
                    for p in g["params"]:
                        p.data.fill_(math.nan)

        return baselines.Driver(Explode(model.parameters(), lr=0.1))

    spec = baselines.OptimizerSpec("explode", exploding, True, "test")
    monkeypatch.setitem(baselines.OPTIMIZERS, "explode", spec)
    r = run_job_safe(job(TINY["tiny-quadratic"], "explode"))
    assert r["diverged"] and math.isnan(r["val"][-1]) and r["steps"][-1] == 2
    outcome = benchmark.x_outcome(r, 40)
    assert outcome["status"] == "diverged"


def test_a_crashing_job_is_reported_not_raised():
    bad = job(TINY["tiny-quadratic"])
    bad["config"] = {"family": "quadratic", "dim": 3}
    r = run_job_safe(bad)
    assert "ValueError" in r["error"] and r["job"] is bad


def test_adamw_curves_are_cached_and_keyed_by_code(tmp_cache, monkeypatch):
    j = job(TINY["tiny-quadratic"], "adamw", multiple=2.0, lr=1e-3)
    assert cache.lookup(j) is None
    r = run_job_safe(j)
    cache.store(j, r)
    hit = cache.lookup(j)
    assert hit["cached"] and hit["val"] == r["val"]
    assert cache.lookup({**j, "seed": 1}) is None
    # each family's entries depend on its own module (and the shared ones), not on the others'
    assert cache.code_fingerprint("quadratic") != cache.code_fingerprint("ncf")
    monkeypatch.setattr(cache, "code_fingerprint", lambda family: "changed-code")
    assert cache.lookup(j) is None
    other = job(TINY["tiny-quadratic"], "explode-not-a-baseline", multiple=2.0)
    cache.store(other, {"val": [1.0]})
    assert cache.lookup(other) is None  # only baselines are cached


def test_curves_of_data_the_code_does_not_make_are_keyed_by_its_digest(tmp_cache, monkeypatch):
    import sys

    from lhopt.tasks import FAMILIES

    j = job(TINY["tiny-quadratic"], "adamw", multiple=2.0, lr=1e-3)
    module = sys.modules[FAMILIES["quadratic"][1].__module__]
    monkeypatch.setattr(module, "data_fingerprint", lambda: "corpus-a", raising=False)
    cache.store(j, {"val": [1.0]})
    assert cache.lookup(j)["val"] == [1.0]
    monkeypatch.setattr(module, "data_fingerprint", lambda: "corpus-b")
    assert cache.lookup(j) is None  # another synthesis: not reused
    monkeypatch.delattr(module, "data_fingerprint")
    assert cache.lookup(j) is None


def test_the_speech_digest_is_of_the_corpus_the_process_read(tmp_cache, monkeypatch):
    from lhopt.tasks import speech

    def corpus(frames):
        monkeypatch.setattr(speech, "_CORPUS", None)  # a fresh process
        path = speech.corpus_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **{"train/frames": np.full(4, frames, dtype=np.float16)})
        return speech.data_fingerprint()

    first = corpus(1.0)
    assert speech.load_corpus()["train"]["frames"][0] == 1.0
    speech.corpus_path().unlink()  # read already: the digest stays that of the data read
    assert speech.data_fingerprint() == first
    assert corpus(2.0) not in (first, None)


def test_families_that_make_their_data_keep_their_keys(tmp_cache):
    import hashlib

    j = job(TINY["tiny-quadratic"], "adamw", multiple=2.0, lr=1e-3)
    fields = {"config": TINY["tiny-quadratic"].key(), "seed": j["seed"], "optimizer": "adamw"}
    fields |= {"lr": 1e-3, "multiple": 2.0, "code": cache.code_fingerprint("quadratic")}
    key = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:32]
    assert cache._path(j).name == key + ".json"  # the key before speech's digest joined it


@pytest.fixture(scope="module")
def ray_local():
    import ray

    start_ray(workers=2)
    yield
    ray.shutdown()


def test_crashed_jobs_do_not_take_the_others_down(ray_local):
    good = job(TINY["tiny-xor"], "adamw")
    bad = {**good, "config": {"family": "nope"}}
    results = execute([good, bad, good], progress=False)
    assert results[0]["error"] is None and results[2]["error"] is None
    assert "unknown task family" in results[1]["error"]
    assert results[0]["val"] == results[2]["val"]  # deterministic across workers


def test_benchmark_end_to_end(ray_local, tmp_cache, tmp_path, monkeypatch):
    monkeypatch.setitem(SUITES, "tiny", TINY)
    doc = run_benchmark("tiny", list(baselines.BASELINES), seeds=2, progress=False)
    assert doc["errors"] == []
    assert set(doc["tasks"]) == set(TINY)
    for x in baselines.BASELINES:
        assert set(doc["summary"][x]) == set(baselines.BASELINES) - {x}
        for s in doc["summary"][x].values():
            assert s["tasks"] == 2 and s["geomean"] >= 0
    tuned = doc["tasks"]["tiny-xor"]["optimizers"]["adamw-cosine-tuned"]
    assert len(tuned["seeds"]) == 2 and tuned["test_at_T"]["accuracy"] > 0
    # Per task and seed: the five T runs of the lr grid, the default lr at 1.5T and 2T, and the
    # chosen lr at 1.5T and 2T unless it is the default.
    by_key = {benchmark.job_key(r["job"]): r for r in doc["runs"]}
    for task in TINY:
        for seed in (0, 1):
            runs = [
                r["job"]
                for r in doc["runs"]
                if r["job"]["optimizer"] == "adamw-cosine"
                and r["job"]["task"] == task
                and r["job"]["seed"] == seed
            ]
            lr = benchmark.chosen_lr(by_key, task, seed)
            assert len(runs) == (7 if lr == baselines.DEFAULT_LR else 9)
            assert {j["lr"] for j in runs if j["multiple"] == 1.0} == set(baselines.TUNED_LR_GRID)
    # what a run identical to the tuned schedule reads over it, per task and over the suite
    for t in doc["tasks"].values():
        assert len(t["tie"]["seeds"]) == 2 and 0 < t["tie"]["speedup"] <= 1.0
    assert doc["tie"]["tasks"] == 2 and 0 < doc["tie"]["geomean"] <= 1.0
    paths = write(doc, tmp_path / "out")
    assert json.loads(paths["results"].read_text())["suite"] == "tiny"
    report = paths["report"].read_text()
    assert "| adamw |" in report
    assert "## Per task, against adamw-cosine-tuned" in report
    assert "| tiny-xor | " + f"{doc['tasks']['tiny-xor']['tie']['speedup']:.2f} |" in report
    assert paths["curves"].stat().st_size > 10_000 and paths["hparams"].exists()

    walls = [
        s["over"]["adamw"]["wall_speedup"]
        for s in doc["tasks"]["tiny-xor"]["optimizers"]["prodigy"]["seeds"]
    ]
    assert all(w is not None and w > 0 for w in walls)  # all timed in this invocation

    again = run_benchmark("tiny", ["adamw", "prodigy"], seeds=1, progress=False)
    assert all(r.get("cached") for r in again["runs"])
    # Cached runs were timed elsewhere: no wall-clock speedup is claimed from them.
    prodigy = again["tasks"]["tiny-xor"]["optimizers"]["prodigy"]
    assert prodigy["over"]["adamw"]["wall_speedup"] is None
    assert prodigy["over"]["adamw"]["speedup"] is not None

    one = run_benchmark("tiny", ["adamw", "prodigy"], seeds=1, progress=False, tasks=["tiny-xor"])
    assert set(one["tasks"]) == {"tiny-xor"} and one["summary"]["prodigy"]["adamw"]["tasks"] == 1
    assert {r["job"]["task"] for r in one["runs"]} == {"tiny-xor"}


def test_a_tie_reads_what_an_identical_run_would_and_zero_where_the_schedule_diverged():
    T, lrs = 100, baselines.TUNED_LR_GRID
    steps = [0, 25, 50, 75, 100]

    timed = {"train_time": 1.0, "total_steps": 100}

    def results(best_lr_curve):
        out = {}
        for lr in lrs:  # the grid: every other lr ends higher, so `best_lr` is chosen
            val = best_lr_curve if lr == 1e-3 else [10.0, 9.0, 8.0, 7.0, 6.0]
            out[("t", 0, "adamw-cosine", lr, 1.0)] = {"steps": steps, "val": val, **timed}
        for m, end in ((1.5, 0.5), (2.0, 0.4)):
            run = {"steps": [0, 100 * m], "val": [10.0, end], **timed}
            out[("t", 0, "adamw-cosine", 1e-3, m)] = run
        return out

    overfits = results([10.0, 3.0, 1.0, 2.0, 2.5])  # its best at step 50 of 100
    tie = benchmark.task_tie(overfits, "t", [0, 1], T)
    identical = benchmark.baseline_speedup(overfits, "t", 0, "adamw-cosine-tuned", 1.0, T)
    assert tie["seeds"][0] == identical["speedup"] == pytest.approx(0.5)
    assert tie["seeds"][1] is None and tie["speedup"] == pytest.approx(0.5)  # seed 1: no runs
    # every lr of the grid ends non-finite (the only way the chosen one does): the first is
    # chosen, and a run identical to it would score 0
    ends_nan = [10.0, 3.0, 1.0, math.nan, math.nan]
    diverged = {k: {**r, "val": ends_nan} for k, r in overfits.items() if k[-1] == 1.0}
    for m in (1.5, 2.0):
        diverged[("t", 0, "adamw-cosine", lrs[0], m)] = overfits[("t", 0, "adamw-cosine", 1e-3, m)]
    assert benchmark.chosen_lr(diverged, "t", 0) == lrs[0]
    assert benchmark.task_tie(diverged, "t", [0], T) == {"seeds": [0.0], "speedup": 0.0}


def test_a_report_of_results_written_before_the_tie_has_no_tie_section():
    from lhopt.bench.report import markdown

    doc = {
        "suite": "s",
        "seeds": [0],
        "tasks": {},
        "optimizers": ["adamw"],
        "baselines": ["adamw"],
        "summary": {"adamw": {}},
        "errors": [],
        "wall_time_s": 1.0,
    }
    text = markdown(doc)
    assert "Per task, against adamw-cosine-tuned" not in text and "| optimizer |" in text


def test_bench_policy_option_checks_the_file_and_drives_lhopt(tmp_path, policy_file):
    from lhopt.bench.benchmark import check_policy
    from lhopt.bench.runner import run_job

    with pytest.raises(ValueError, match="'lhopt-trainloss'], none of which is among"):
        check_policy("x.pt", ["adamw"])
    with pytest.raises(ValueError, match="does not exist"):
        check_policy(str(tmp_path / "missing.pt"), ["lhopt", "adamw"])
    path = policy_file
    assert check_policy(str(path), ["lhopt"]) == str(path.resolve())
    assert check_policy("default", ["lhopt"]) == "default"  # the shipped one, not a path
    quad = TaskConfig.make("quadratic", dim=20, condition=100.0, noise=0.3, batch=4, budget=80)
    job = {
        "task": "t",
        "config": quad.to_dict(),
        "seed": 0,
        "optimizer": "lhopt",
        "lr": None,
        "multiple": 1.0,
    }
    shipped = run_job(job)
    other = run_job({**job, "policy": str(path)})
    assert other["hparams"]["lr"] != shipped["hparams"]["lr"]  # another policy, other choices
    # "lr" is what the update used: the shipped policy's base lr under its cosine shape and its
    # horizon factor for T = 80.
    from lhopt.control import load_policy

    horizon = load_policy("default").spec.horizon_factor(80)
    lr, base = np.array(shipped["hparams"]["lr"]), np.array(shipped["hparams"]["base_lr"])
    assert lr[-1] == pytest.approx(0.0, abs=1e-12) and base[-1] > 0
    assert np.all(lr <= base * horizon * (1 + 1e-12)) and np.any(lr > base)
    # in AdamW's units the same: the quadratic's one parameter is a vector, which the trust
    # ratio leaves alone (`CIAO.adamw_lrs` on matrices: tests/test_ciao.py)
    assert np.allclose(shipped["hparams"]["adamw_lr"], lr, rtol=1e-12, atol=0)


def test_lhopt_trainloss_never_sees_a_validation_loss():
    from lhopt.bench.optimizers import LEARNED, TrainLossDriver, get

    assert "lhopt-trainloss" in LEARNED
    quad = TaskConfig.make("quadratic", dim=20, condition=100.0, noise=0.3, batch=4, budget=80)
    for name, sees_val in (("lhopt", True), ("lhopt-trainloss", False)):
        model = torch.nn.Linear(3, 1)
        driver = get(name).make(model, 80, None)
        assert driver.optimizer.model is model  # registers restore the module, as users pass it
        assert isinstance(driver, TrainLossDriver) != sees_val
        driver.on_eval(0, 1.5)
        assert (driver.optimizer._val_loss == 1.5) == sees_val
    job = {
        "task": "t",
        "config": quad.to_dict(),
        "seed": 0,
        "optimizer": "lhopt-trainloss",
        "lr": None,
        "multiple": 1.0,
    }
    from lhopt.bench.runner import run_job

    assert len(run_job(job)["val"]) > 2  # the benchmark still measures its validation curve


def test_cli_refuses_an_unknown_task_with_the_suites_own(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--suite", "quick", "--tasks", "quick-xor-gru,val-xor-rnn2"])
    err = capsys.readouterr().err
    assert "val-xor-rnn2" in err and "quick-mnist1d-mlp" in err
