"""Framework integrations: Hugging Face Trainer, PyTorch Lightning (lhopt.integrations)."""

from __future__ import annotations

import bisect
import warnings

import pytest
import torch


def _tokens(n: int, seq: int, vocab: int, seed: int) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    # A learnable pattern: each sequence counts up from a random start.
    starts = torch.randint(0, vocab, (n, 1), generator=g)
    ids = (starts + torch.arange(seq)) % vocab
    return [{"input_ids": x, "labels": x} for x in ids]


def _policy_lr_at(history: list[dict], step: int, group: int) -> float:
    """The lr the policy left for optimizer step `step`: its last decision at or before it."""
    steps = [h["step"] for h in history]
    return history[bisect.bisect_right(steps, step) - 1]["groups"][group]["lr"]


def test_hf_trainer_runs_the_policy(tmp_path, policy_file):
    transformers = pytest.importorskip("transformers")
    from lhopt.integrations.transformers import LHOPTTrainer

    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=32, n_positions=16, n_embd=32, n_layer=2, n_head=2, bos_token_id=0
    )
    model = transformers.GPT2LMHeadModel(config)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=32,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        per_device_eval_batch_size=8,
        eval_strategy="steps",
        eval_steps=4,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        max_grad_norm=0.0,
        lr_scheduler_type="linear",  # not used: the policy sets the lr
        warmup_steps=10,
        dataloader_num_workers=0,
        disable_tqdm=True,
        seed=0,
    )
    seen = []

    class Watch(transformers.TrainerCallback):
        def on_optimizer_step(self, args, state, control, **kwargs):
            opt = trainer.lhopt_optimizer  # the lrs of the step just taken
            seen.append((state.global_step, [g["lr"] for g in opt.param_groups]))

    trainer = LHOPTTrainer(
        model=model,
        args=args,
        train_dataset=_tokens(256, 16, 32, seed=1),
        eval_dataset=_tokens(32, 16, 32, seed=2),
        lhopt={"policy": policy_file, "decisions": 8, "sample": True},
        callbacks=[Watch()],
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="LearnedOptimizer")  # no lr fight, no blind step
        trainer.train()
    opt = trainer.lhopt_optimizer
    history = opt.history
    assert opt.total_steps == trainer.state.max_steps == 32
    assert [h["step"] for h in history] == list(range(0, 32, 4))
    # The lr the optimizer held at every step is the one the policy set; the Trainer logs it.
    assert [s for s, _ in seen] == list(range(32))
    for step, lrs in seen:
        assert lrs == [_policy_lr_at(history, step, g) for g in range(len(lrs))]
    assert len({h["hparams"]["lr"] for h in history}) > 1  # the policy moved it
    logs = [e for e in trainer.state.log_history if "loss" in e and "eval_loss" not in e]
    assert [e["step"] for e in logs] == list(range(1, 33))
    for e in logs:
        assert e["learning_rate"] == pytest.approx(_policy_lr_at(history, e["step"] - 1, 0))
    # Every decision after the first saw the mean train loss of its period, as the Trainer
    # logged it (gradient accumulation included), and the latest evaluation.
    step_loss = [e["loss"] for e in logs]
    evals = {e["step"]: e["eval_loss"] for e in trainer.state.log_history if "eval_loss" in e}
    for prev, h in zip(history, history[1:], strict=False):
        mean = sum(step_loss[prev["step"] : h["step"]]) / (h["step"] - prev["step"])
        assert h["train_loss"] == pytest.approx(mean, rel=1e-3)
        assert h["val_loss"] == pytest.approx(evals[h["step"]])
    assert history[0]["train_loss"] is None


def test_hf_trainer_refuses_an_optimizer_of_its_own(tmp_path):
    transformers = pytest.importorskip("transformers")
    from lhopt.integrations.transformers import LHOPTTrainer

    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    args = transformers.TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    with pytest.raises(ValueError, match="lhopt=\\{...\\}, not optimizers="):
        LHOPTTrainer(model=model, args=args, optimizers=(opt, None))
    with pytest.raises(ValueError, match="must not set \\['total_steps'\\]"):
        LHOPTTrainer(model=model, args=args, lhopt={"total_steps": 5})


def test_lightning_callback_reports_each_step_and_each_validation(policy_file):
    pl = pytest.importorskip("lightning.pytorch")
    from lhopt.integrations.lightning import LHOPTCallback, learned_optimizer

    g = torch.Generator().manual_seed(0)
    x = torch.randn(160, 6, generator=g)
    y = x @ torch.randn(6, 1, generator=g) + 0.1 * torch.randn(160, 1, generator=g)
    train = torch.utils.data.DataLoader(list(zip(x[:128], y[:128], strict=True)), batch_size=4)
    val = torch.utils.data.DataLoader(list(zip(x[128:], y[128:], strict=True)), batch_size=16)

    class Model(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(
                torch.nn.Linear(6, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1)
            )
            self.micro, self.vals, self.lrs = [], [], []

        def training_step(self, batch, i):
            loss = torch.nn.functional.mse_loss(self.net(batch[0]), batch[1])
            self.micro.append((self.trainer.global_step, loss.item()))
            return loss

        def validation_step(self, batch, i):
            self.log("val_loss", torch.nn.functional.mse_loss(self.net(batch[0]), batch[1]))

        def on_validation_epoch_end(self):
            if not self.trainer.sanity_checking:
                self.vals.append(
                    (self.trainer.global_step, float(self.trainer.callback_metrics["val_loss"]))
                )

        def on_train_batch_end(self, outputs, batch, i):
            opt = self.trainer.optimizers[0]
            self.lrs.append((self.trainer.global_step, [gr["lr"] for gr in opt.param_groups]))

        def configure_optimizers(self):
            return learned_optimizer(self, policy=policy_file, decisions=8, sample=True)

    torch.manual_seed(0)
    model = Model()
    trainer = pl.Trainer(
        max_epochs=2,
        accumulate_grad_batches=2,  # 32 batches an epoch: 16 optimizer steps
        val_check_interval=0.25,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[LHOPTCallback()],
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="LearnedOptimizer")
        warnings.filterwarnings("error", message="LHOPTCallback")
        trainer.fit(model, train, val)
    opt = trainer.optimizers[0]
    history = opt.history
    assert opt.total_steps == trainer.estimated_stepping_batches == trainer.global_step == 32
    assert [h["step"] for h in history] == list(range(0, 32, 4))
    # After each optimizer step the optimizer holds the lr the policy set for it.
    stepped = [(s - 1, lrs) for s, lrs in model.lrs if s > 0]
    assert sorted({s for s, _ in stepped}) == list(range(32))
    for step, lrs in stepped:
        assert lrs == [_policy_lr_at(history, step, gi) for gi in range(len(lrs))]
    assert len({h["hparams"]["lr"] for h in history}) > 1
    # Each decision saw the mean over its period's steps of each step's mean micro-batch loss.
    per_step = {}
    for s, loss in model.micro:
        per_step.setdefault(s, []).append(loss)
    step_loss = [sum(v) / len(v) for _, v in sorted(per_step.items())]
    assert [len(v) for v in per_step.values()] == [2] * 32
    for prev, h in zip(history, history[1:], strict=False):
        mean = sum(step_loss[prev["step"] : h["step"]]) / (h["step"] - prev["step"])
        assert h["train_loss"] == pytest.approx(mean, rel=1e-5)
        done = [v for s, v in model.vals if s <= h["step"]]
        assert h["val_loss"] == (pytest.approx(done[-1], rel=1e-6) if done else None)
    assert len(model.vals) == 8 and history[0]["train_loss"] is None


def test_train_loss_fn_replaces_the_reported_losses(policy_file):
    import lhopt

    model = torch.nn.Linear(3, 1)
    calls = []

    def period_loss():
        calls.append(len(calls))
        return None if len(calls) == 1 else 10.0 + len(calls)

    opt = lhopt.LearnedOptimizer(
        model.parameters(), total_steps=16, policy=policy_file, train_loss_fn=period_loss
    )
    for _ in range(16):
        loss = opt.step(lambda: model(torch.ones(2, 3)).pow(2).mean())  # reported, then unused
        opt.report(train_loss=loss)
    assert [h["train_loss"] for h in opt.history] == [None, 12.0, 13.0, 14.0]
    with pytest.raises(ValueError, match="train_loss_fn=3 must be callable"):
        lhopt.LearnedOptimizer(model.parameters(), total_steps=16, train_loss_fn=3)
