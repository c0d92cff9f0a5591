"""Contrastive losses shared by the methods (shapes in names, one class per loss)."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

MAX_LOGIT_SCALE = math.log(100.0)


class ClipLoss(nn.Module):
    """Symmetric InfoNCE: mean of image->text and text->image cross-entropy.

    ``logit_scale`` is the log of the inverse temperature; it is clamped at ln(100)
    here, in the forward pass, as CLIP does.
    """

    def forward(self, image_features_nd: torch.Tensor, text_features_nd: torch.Tensor,
                logit_scale: torch.Tensor) -> torch.Tensor:
        scale = logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()
        logits_nn = scale * image_features_nd @ text_features_nd.T
        targets_n = torch.arange(logits_nn.shape[0], device=logits_nn.device)
        return (F.cross_entropy(logits_nn, targets_n) + F.cross_entropy(logits_nn.T, targets_n)) / 2
