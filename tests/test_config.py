"""Meta-training configs: `extends` chains and the committed configs they resolve to."""

from pathlib import Path

import pytest
import torch

from lhopt.meta import config as meta_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").rglob("*.toml"))


def test_every_committed_config_has_its_run_record():
    # Each config's run folder keeps the complete file that run was started with.
    assert len(CONFIGS) >= 10
    for path in CONFIGS:
        assert (ROOT / "runs" / path.stem / "config.toml").is_file(), path


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_a_config_resolves_to_what_its_run_used(path):
    recorded = meta_config.load(ROOT / "runs" / path.stem / "config.toml")
    assert meta_config.load(path).to_dict() == recorded.to_dict()


def test_the_resumable_stage_resolves_to_its_checkpoints_config():
    # A checkpoint resumes only under the config it was written with (MetaTrainer.load_state_dict).
    state = torch.load(ROOT / "runs/default-stage8/checkpoint.pt", weights_only=False)
    cfg = meta_config.load(ROOT / "configs/default-stage8.toml")
    assert meta_config.from_dict(state["config"]).to_dict() == cfg.to_dict()


def test_the_stages_change_what_they_say():
    def load(name):
        return meta_config.load(ROOT / "configs" / name)

    base, s6, s8 = load("default.toml"), load("default-stage6.toml"), load("default-stage8.toml")
    assert (base.ppo.lr, base.run.seed, base.run.init_from) == (1e-3, 0, "")
    assert (base.episode.reward_loss, base.episode.reward_horizon) == ("best", 0.0)
    assert (s6.run.seed, s6.run.budget_scale, s6.run.data_scale) == (6, 4.0, 10.0)
    assert s6.run.init_from == "runs/default-stage5/policy-0010.pt"
    assert (s6.ppo.lr, s6.episode.reward_loss, s6.episode.reward_horizon) == (3e-4, "last", 20.0)
    assert s6.episode.reward_asymptote is False
    assert s8.run.init_from == "runs/default-stage6/policy-0010.pt"
    assert (s8.run.seed, s8.run.min_new_transitions, s8.run.eval_every) == (8, 512, 3)
    assert (s8.ppo.batch, s8.ppo.buffer, s8.ppo.batches_per_iteration) == (512, 1536, 4)
    assert (s8.run.task_pool, s8.policy.hidden, s8.episode.lr_perturbation) == (512, 256, 100.0)


def test_extends_merges_section_by_section_and_chains(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "base.toml").write_text(
        '[run]\nseed = 3\nworkers = 0\nfamilies = ["quadratic", "algorithmic"]\n'
        'task = {family = "quadratic", params = {dim = 10, noise = 1.0}}\n'
        "[ppo]\nlr = 1e-3\nbatch = 64\n"
    )
    (tmp_path / "sub" / "mid.toml").write_text('extends = "../base.toml"\n[ppo]\nbatch = 32\n')
    (tmp_path / "top.toml").write_text(
        'extends = "sub/mid.toml"\n[run]\nseed = 4\nfamilies = ["mnist1d"]\n'
        "task = {params = {dim = 20}}\n[policy]\nhidden = 32\n"
    )
    data = meta_config.load_dict(tmp_path / "top.toml")
    assert "extends" not in data
    assert data["run"]["task"] == {"params": {"dim": 20}}  # a value is replaced whole, not merged
    del data["run"]["task"]
    cfg = meta_config.from_dict(data)
    assert (cfg.run.seed, cfg.run.workers) == (4, 0)  # a key overrides, its neighbours stay
    assert cfg.run.families == ["mnist1d"]
    assert (cfg.ppo.lr, cfg.ppo.batch, cfg.policy.hidden) == (1e-3, 32, 32)


def test_extends_errors_name_the_files(tmp_path):
    (tmp_path / "a.toml").write_text('extends = "b.toml"\n')
    (tmp_path / "b.toml").write_text('extends = "a.toml"\n')
    with pytest.raises(ValueError, match=r"cycle: .*a\.toml -> .*b\.toml -> .*a\.toml"):
        meta_config.load(tmp_path / "a.toml")
    (tmp_path / "self.toml").write_text('extends = "./self.toml"\n')
    with pytest.raises(ValueError, match="cycle"):
        meta_config.load(tmp_path / "self.toml")
    (tmp_path / "c.toml").write_text('extends = "missing.toml"\n')
    with pytest.raises(ValueError, match=r"missing\.toml' does not exist \(extended by .*c\.toml"):
        meta_config.load(tmp_path / "c.toml")
    (tmp_path / "d.toml").write_text("extends = 3\n")
    with pytest.raises(ValueError, match=r"d\.toml.*extends = 3 must be a file path"):
        meta_config.load(tmp_path / "d.toml")
    (tmp_path / "e.toml").write_text('extends = "bad.toml"\n')
    (tmp_path / "bad.toml").write_text("[run\n")
    with pytest.raises(ValueError, match=r"bad\.toml' is not valid TOML"):
        meta_config.load(tmp_path / "e.toml")


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_dumps_writes_the_resolved_config_back(path, tmp_path):
    cfg = meta_config.load(path)
    (tmp_path / "resolved.toml").write_text(meta_config.dumps(cfg))
    assert meta_config.load(tmp_path / "resolved.toml") == cfg
