# examples/lightning_module.py: PyTorch Lightning (pip install 'lhopt[integrations]')
import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lhopt.integrations.lightning import LHOPTCallback, learned_optimizer


class Regression(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 64), nn.Tanh(), nn.Linear(64, 1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self.net(x), y)  # reported by LHOPTCallback

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.mse_loss(self.net(x), y))  # reported too

    def configure_optimizers(self):
        return learned_optimizer(self)  # total_steps = trainer.estimated_stepping_batches


torch.manual_seed(0)
x = torch.randn(1024, 8)
y = x.sum(1, keepdim=True) + 0.1 * torch.randn(1024, 1)
train = DataLoader(TensorDataset(x[:896], y[:896]), batch_size=16, shuffle=True)
val = DataLoader(TensorDataset(x[896:], y[896:]), batch_size=128)
trainer = pl.Trainer(
    max_epochs=2,
    accumulate_grad_batches=2,
    val_check_interval=0.25,
    callbacks=[LHOPTCallback()],
    accelerator="auto",
    logger=False,
    enable_checkpointing=False,
    enable_progress_bar=False,
)
trainer.fit(Regression(), train, val)
print(trainer.optimizers[0].controller.describe())
