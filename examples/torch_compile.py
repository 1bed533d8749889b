# examples/torch_compile.py: a compiled model (the optimizer step stays eager)
import math

import torch
from torch import nn

import lhopt

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 64), nn.Tanh(), nn.Linear(64, 1))
compiled = torch.compile(model)
T = 40
# steps_per_epoch=math.inf: every batch is fresh data (nothing to overfit, no validation loss)
opt = lhopt.LearnedOptimizer(
    model.parameters(), total_steps=T, model=model, steps_per_epoch=math.inf
)
for _ in range(T):
    x, y = torch.randn(32, 8), torch.randn(32, 1)
    loss = nn.functional.mse_loss(compiled(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    opt.report(train_loss=loss)
print(len(opt.history), "decisions")
