"""Batch-norm statistics of an untrained model, estimated on the pretraining images.

A batch-norm layer that has never seen data holds its initial running statistics (mean 0,
variance 1), so in evaluation mode it passes its input through unnormalised: an untrained
EfficientNet evaluated that way is a network without its normalisation, another function
than the one the architecture computes once it has seen images. Every pretrained model's
statistics come from the pretraining images; an untrained control (``pretrain: false``)
gets its statistics from the same images, without a gradient step, so that the gain over
it is what pretraining put in the weights (the "data-dependent initialisation" that
self-supervised papers give their random baselines, Kraehenbuehl et al. 2016). Measured on
the default run: docs/reading-the-table.md, Controls.

Only layers still at their initial statistics are estimated: a backbone loaded from
published weights (a paper preset's ImageNet EfficientNet) keeps its own.
"""

from __future__ import annotations

from collections.abc import Iterable

# A parameter of every untrained control's pretraining job (workflow/rules/common.smk): a
# change to what this module does bumps it, and the controls and what depends on them rerun.
# 1: initial statistics; 2: estimated on the training images (2026-12-07).
UNTRAINED_VERSION = 2

# torch is imported inside the functions: the workflow reads UNTRAINED_VERSION when it parses.


def unseen_batch_norms(model) -> list:
    """Batch-norm layers with running statistics that have never been updated."""
    from torch.nn.modules.batchnorm import _BatchNorm

    return [layer for layer in model.modules()
            if isinstance(layer, _BatchNorm) and layer.track_running_stats and int(layer.num_batches_tracked) == 0
            and bool(layer.running_mean.eq(0).all()) and bool(layer.running_var.eq(1).all())]


def estimate_batch_norm_statistics(model, batches_nchw: Iterable) -> int:
    """Set the running statistics of ``model``'s unseen batch-norm layers on the image path
    (``image_features``, then ``project_image``) to their averages over ``batches_nchw``
    (normalised images), each layer normalising its batch as in training. Nothing else
    changes: the other layers stay in evaluation mode (no dropout), no weight moves, and
    each layer's momentum and the model's mode are restored. Returns how many layers were
    estimated."""
    import torch

    layers = unseen_batch_norms(model)
    if not layers:
        return 0
    was_training = model.training
    momenta = [layer.momentum for layer in layers]
    model.eval()
    for layer in layers:
        layer.momentum = None  # a cumulative average: every batch counts the same
        layer.train()
    with torch.no_grad():
        for images in batches_nchw:
            model.project_image(model.image_features(images))
    for layer, momentum in zip(layers, momenta):
        layer.momentum = momentum
    model.train(was_training)
    return sum(int(layer.num_batches_tracked) > 0 for layer in layers)
