# examples/plain_loop.py: a plain PyTorch loop
import torch
from torch import nn

import lhopt

torch.manual_seed(0)
x, y = torch.randn(512, 8), torch.randn(512, 1)
x_val, y_val = torch.randn(128, 8), torch.randn(128, 1)
model = nn.Sequential(nn.Linear(8, 64), nn.Tanh(), nn.Linear(64, 1))


def val_loss() -> float:  # called at each decision
    with torch.no_grad():
        return nn.functional.mse_loss(model(x_val), y_val).item()


T = 200
opt = lhopt.LearnedOptimizer(
    model.parameters(),
    total_steps=T,
    steps_per_epoch=512 // 32,  # batches of 32 from 512 records
    val_loss_fn=val_loss,
    model=model,
)
for _ in range(T):
    i = torch.randint(0, 512, (32,))
    loss = nn.functional.mse_loss(model(x[i]), y[i])
    opt.zero_grad()
    loss.backward()
    opt.step()
    opt.report(train_loss=loss)  # a tensor: no host sync per step

print(opt.controller.describe())  # the last decision, in one line
lhopt.plot_history(opt.history, "schedule.png", total_steps=T)  # needs matplotlib
