"""Readout, losses and batch mixing (mixup / cutmix) as the papers' recipes use them."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .config import OptimConfig


def readout(out: torch.Tensor) -> torch.Tensor:
    """Mean over time of the per-step logits ``[T, N, C] -> [N, C]``."""
    return out.mean(0)


def loss_fn(out: torch.Tensor, target: torch.Tensor, o: OptimConfig, train: bool) -> torch.Tensor:
    """Cross-entropy of the time-averaged logits, or TET (Deng et al. 2022) when asked.

    ``target`` is class indices or (after mixing) class probabilities.
    """
    smoothing = o.label_smoothing if train else 0.0
    if o.loss == "tet" and train:
        steps = out.shape[0]
        ce = sum(F.cross_entropy(out[t], target, label_smoothing=smoothing) for t in range(steps))
        mse = F.mse_loss(out, torch.full_like(out, o.tet_means))
        return (1 - o.tet_lambda) * ce / steps + o.tet_lambda * mse
    return F.cross_entropy(readout(out), target, label_smoothing=smoothing)


def mix_batch(
    x: torch.Tensor, y: torch.Tensor, classes: int, o: OptimConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup or cutmix (one picked at random per batch) on a batch before time encoding.

    Returns the mixed inputs and soft targets; unchanged inputs with hard targets when both
    alphas are zero. Cutmix cuts a box out of the last two axes (H, W).
    """
    use_mixup, use_cutmix = o.mixup_alpha > 0, o.cutmix_alpha > 0 and x.dim() >= 4
    if not (use_mixup or use_cutmix):
        return x, y
    cutmix = use_cutmix and (not use_mixup or torch.rand(()).item() < 0.5)
    alpha = o.cutmix_alpha if cutmix else o.mixup_alpha
    lam = float(np.random.beta(alpha, alpha))
    perm = torch.randperm(x.shape[0])
    soft = F.one_hot(y, classes).float()
    if cutmix:
        h, w = x.shape[-2:]
        ch, cw = int(h * (1 - lam) ** 0.5), int(w * (1 - lam) ** 0.5)
        cy, cx = torch.randint(h, ()).item(), torch.randint(w, ()).item()
        y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
        x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
        x = x.clone()
        x[..., y0:y1, x0:x1] = x[perm][..., y0:y1, x0:x1]
        lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
    else:
        x = lam * x + (1 - lam) * x[perm]
    return x, lam * soft + (1 - lam) * soft[perm]
