# examples/torch_compile.py: a compiled model (the optimizer step stays eager)
import torch
from torch import nn

import lhopt

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 64), nn.Tanh(), nn.Linear(64, 1))
compiled = torch.compile(model)
T = 40
opt = lhopt.LearnedOptimizer(model.parameters(), total_steps=T, model=model)
for _ in range(T):
    x, y = torch.randn(32, 8), torch.randn(32, 1)
    loss = nn.functional.mse_loss(compiled(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    opt.report(train_loss=loss)
print(len(opt.history), "decisions")
