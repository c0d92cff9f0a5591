import math

import pytest
import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss as OpenClipLoss

from models.losses import ClipLoss


def test_clip_loss_equals_open_clip():
    torch.manual_seed(0)
    image = F.normalize(torch.randn(16, 32), dim=-1)
    text = F.normalize(torch.randn(16, 32), dim=-1)
    scale = torch.tensor(math.log(1 / 0.07))
    ours = ClipLoss()(image, text, scale)
    reference = OpenClipLoss()(image, text, scale.exp())
    assert ours.item() == pytest.approx(reference.item(), abs=1e-6)


def test_logit_scale_is_clamped_at_100():
    image = F.normalize(torch.randn(8, 4), dim=-1)
    text = F.normalize(torch.randn(8, 4), dim=-1)
    big = ClipLoss()(image, text, torch.tensor(10.0))
    capped = ClipLoss()(image, text, torch.tensor(math.log(100.0)))
    assert big.item() == pytest.approx(capped.item(), abs=1e-6)
