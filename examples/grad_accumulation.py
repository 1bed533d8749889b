# examples/grad_accumulation.py: several micro-batches per optimizer step
import math

import torch
from torch import nn

import lhopt

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 64), nn.Tanh(), nn.Linear(64, 1))
steps, accumulate = 100, 4  # total_steps counts optimizer steps, not micro-batches
# steps_per_epoch=math.inf: every batch is fresh data (nothing to overfit, no validation loss)
opt = lhopt.LearnedOptimizer(
    model.parameters(), total_steps=steps, model=model, steps_per_epoch=math.inf
)
for _ in range(steps):
    opt.zero_grad()
    step_loss = 0.0
    for _ in range(accumulate):
        x, y = torch.randn(16, 8), torch.randn(16, 1)
        loss = nn.functional.mse_loss(model(x), y) / accumulate
        loss.backward()
        step_loss += loss.detach()
    opt.step()
    opt.report(train_loss=step_loss)  # once per optimizer step: the step's mean loss
print(len(opt.history), "decisions")
