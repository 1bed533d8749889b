# examples/hf_trainer.py: a Hugging Face Trainer (pip install 'lhopt[integrations]')
import torch
from transformers import GPT2Config, GPT2LMHeadModel, TrainingArguments

from lhopt.integrations.transformers import LHOPTTrainer


def sequences(n: int, seed: int) -> list[dict]:  # each counts up from a random token
    g = torch.Generator().manual_seed(seed)
    ids = (torch.randint(0, 64, (n, 1), generator=g) + torch.arange(16)) % 64
    return [{"input_ids": x, "labels": x} for x in ids]


torch.manual_seed(0)
model = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=16, n_embd=32, n_layer=2, n_head=2))
args = TrainingArguments(
    output_dir="hf-out",
    max_steps=24,  # the LearnedOptimizer's total_steps
    per_device_train_batch_size=4,
    gradient_accumulation_steps=2,
    eval_strategy="steps",
    eval_steps=6,  # each evaluation's eval_loss goes to the policy
    max_grad_norm=0.0,  # CIAO clips gradients itself (clip_fraction, steered by the policy)
    save_strategy="no",
    report_to=[],
    disable_tqdm=True,
)
trainer = LHOPTTrainer(
    model=model,
    args=args,
    train_dataset=sequences(256, seed=1),
    eval_dataset=sequences(32, seed=2),
    lhopt={"decisions": 6},  # LearnedOptimizer's options
)
trainer.train()
print(trainer.lhopt_optimizer.controller.describe())
