"""Evaluation: accuracy, mean absolute IPD error in degrees and the confusion matrix."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .stimulus import IPDDataset, class_midpoints


@dataclass
class Evaluation:
    accuracy: float  # fraction of samples whose argmax class is the true class
    abs_error_deg: float  # mean |true IPD - midpoint of the predicted class|, degrees
    confusion: torch.Tensor  # (C, C) float64, [true, predicted], each row sums to 1 (or 0 if the class is absent)
    ipd_true: torch.Tensor  # (S,) radians
    ipd_est: torch.Tensor  # (S,) radians, midpoints of the predicted classes

    def summary(self, prefix: str) -> dict:
        return {f"{prefix}_accuracy": self.accuracy, f"{prefix}_abs_error_deg": self.abs_error_deg}


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: IPDDataset, batch_size: int, generator: torch.Generator) -> Evaluation:
    """One pass over ``data`` (a fresh phase offset from ``generator``) with ``model`` as it is."""
    model.eval()
    num_classes = data.config.num_classes
    true_labels, predicted, ipds = [], [], []
    for batch in data.batches(batch_size, generator, shuffle=False):
        predicted.append(model(batch.x).argmax(1).cpu())
        true_labels.append(batch.labels.cpu())
        ipds.append(batch.ipd)
    true_labels, predicted, ipd_true = torch.cat(true_labels), torch.cat(predicted), torch.cat(ipds)
    ipd_est = class_midpoints(predicted, num_classes)
    counts = torch.zeros(num_classes, num_classes, dtype=torch.float64)
    counts.index_put_((true_labels, predicted), torch.ones_like(ipd_true), accumulate=True)
    confusion = counts / counts.sum(1, keepdim=True).clamp_min(1)
    return Evaluation(
        accuracy=(true_labels == predicted).double().mean().item(),
        abs_error_deg=((ipd_true - ipd_est).abs().mean() * 180 / math.pi).item(),
        confusion=confusion,
        ipd_true=ipd_true,
        ipd_est=ipd_est,
    )
