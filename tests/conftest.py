"""Fixtures shared by the test files."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from lhopt.control import ActionSpace, FeatureEngine, PolicyConfig, load_policy, save_policy_file
from lhopt.meta.config import MetaConfig
from lhopt.meta.train import new_policy


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    """Data and curve caches in a fresh folder."""
    monkeypatch.setenv("LHOPT_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def parts():
    """The official action space and the feature engine over it."""
    space = ActionSpace()
    return space, FeatureEngine(space.hparam_kinds, space.encoding_names)


def small_policy_file(path, **episode):
    """Write a small policy file whose heads prefer something, so actions vary and matter;
    `episode` sets `[episode]` keys of its spec (e.g. epochs=True). Returns `path`."""
    cfg = MetaConfig()
    cfg.policy = PolicyConfig(hidden=16)
    for key, value in episode.items():
        setattr(cfg.episode, key, value)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = new_policy(cfg)
        with torch.no_grad():
            net.heads.weight.normal_(0, 1.0)
    save_policy_file(net, path)
    return path


@pytest.fixture(scope="session")
def make_policy_file():
    """`small_policy_file`, for a test that needs a policy file of another spec."""
    return small_policy_file


def _shipped_policy_with(path, **spec):
    """Write the shipped policy file with the fields `spec` of its spec replaced (its network,
    start and the rest of its spec as shipped). Returns `path`."""
    policy = load_policy("default")
    spec = dataclasses.replace(policy.spec, **spec)
    save_policy_file(policy, path, spec=spec, initial=policy.initial)
    return path


@pytest.fixture
def shipped_policy_with():
    """`_shipped_policy_with`, for a test that needs the shipped network under another spec."""
    return _shipped_policy_with


@pytest.fixture(scope="session")
def policy_file(tmp_path_factory):
    """A small policy file (`small_policy_file`)."""
    return small_policy_file(tmp_path_factory.mktemp("policy") / "p.pt")
