# examples/amp.py: automatic mixed precision (float16 and a GradScaler on CUDA, bfloat16 on CPU)
import math

import torch
from torch import nn

import lhopt

device = "cuda" if torch.cuda.is_available() else "cpu"
dtype = torch.float16 if device == "cuda" else torch.bfloat16
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 64), nn.Tanh(), nn.Linear(64, 1)).to(device)
scaler = torch.amp.GradScaler(device, enabled=dtype == torch.float16)
T = 100
# steps_per_epoch=math.inf: every batch is fresh data (nothing to overfit, no validation loss)
opt = lhopt.LearnedOptimizer(
    model.parameters(), total_steps=T, model=model, steps_per_epoch=math.inf
)
for _ in range(T):
    x, y = torch.randn(32, 8, device=device), torch.randn(32, 1, device=device)
    with torch.autocast(device, dtype=dtype):
        loss = nn.functional.mse_loss(model(x).float(), y)
    opt.zero_grad()
    scaler.scale(loss).backward()
    scaler.step(opt)  # unscales the gradients first; skips the step if they overflowed
    scaler.update()
    opt.report(train_loss=loss)  # the unscaled loss
print(opt.history[-1]["hparams"]["lr"])
