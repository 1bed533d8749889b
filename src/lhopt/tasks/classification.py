"""Classification over fixed splits, shared by the families that train that way."""

from __future__ import annotations

import torch
from torch import nn

from lhopt.tasks.base import Task, splits_to


class SplitClassificationTask(Task):
    """`self.data` maps "train", "val" and "test" to (inputs, labels); training batches of
    `batch` are drawn with replacement from the training split; the loss is cross-entropy, the
    test metrics accuracy and loss."""

    data: dict[str, tuple[torch.Tensor, torch.Tensor]]

    def train_loss(self) -> torch.Tensor:
        x, y = self.data["train"]
        idx = torch.randint(0, len(x), (self.config.p["batch"],), generator=self.batch_generator)
        (idx,) = self.on_device(idx)
        return nn.functional.cross_entropy(self.model(x[idx]), y[idx])

    def _data_to(self, device: torch.device) -> None:
        self.data = splits_to(self.data, device)

    def _eval_loss(self, split: str) -> float:
        x, y = self.data[split]
        return float(nn.functional.cross_entropy(self.model(x), y))

    def _test_metrics(self) -> dict[str, float]:
        x, y = self.data["test"]
        logits = self.model(x)
        acc = (logits.argmax(-1) == y).float().mean()
        return {"accuracy": float(acc), "loss": float(nn.functional.cross_entropy(logits, y))}
