# examples/gpu.py: parameters, gradients and optimizer state on the GPU; the policy on the CPU
import math

import torch
from torch import nn

import lhopt

device = "cuda" if torch.cuda.is_available() else "cpu"
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 256), nn.GELU(), nn.Linear(256, 1)).to(device)
T = 100
# steps_per_epoch=math.inf: every batch is fresh data (nothing to overfit, no validation loss)
opt = lhopt.LearnedOptimizer(
    model.parameters(), total_steps=T, model=model, steps_per_epoch=math.inf
)
for _ in range(T):
    x, y = torch.randn(64, 8, device=device), torch.randn(64, 1, device=device)
    loss = nn.functional.mse_loss(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    opt.report(train_loss=loss)  # summed on the device; read once per decision
state = opt.state[model[0].weight]
print(device, state["exp_avg"].device, next(opt.policy_net.parameters()).device)
