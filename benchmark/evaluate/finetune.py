"""Full fine-tune: the image encoder and a linear head trained together on a label fraction.

Every method gets the same number of optimizer steps and the same batch size, lr and
schedule (``finetune`` in the config). Batches are drawn class-balanced (each class
equally likely) with the method's own pretraining augmentations. Every ``eval_every``
steps the model is scored on validation (macro AUC, ties: balanced accuracy); the best
validation state is kept, and training stops early after ``patience`` evaluations
without improvement. The test split is only scored with the kept state. Training steps and
the encoder's predictions run under the configured precision (bf16 autocast by default,
``benchmark/precision.py``); the head and its softmax predict in fp32.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from benchmark.data.images import StreamedImages, model_normalise
from benchmark.evaluate.device import model_device
from benchmark.precision import (
    DEFAULT_PRECISION,
    fused_where_supported,
    precision_context,
    prefer_fast_cpu_kernels,
    resolve_precision,
)
from benchmark.stats import balanced_accuracy, macro_auc


class Classifier(nn.Module):
    def __init__(self, model: nn.Module, n_classes: int):
        super().__init__()
        self.model = model
        self.head = nn.Linear(model.feature_dim, n_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.model.image_features(images))


@dataclass
class FinetuneResult:
    classifier: Classifier  # in its best validation state, in eval mode
    history: list[dict]  # one entry per validation: step, loss, val_auc, val_bacc
    best_step: int  # the step of the kept state
    val_scores: np.ndarray  # (n_val, n_classes) class probabilities of the kept state
    precision: str  # the precision that ran: bf16 or fp32 (``auto`` resolved on this device)


@torch.no_grad()
def predict(classifier: Classifier, images_u8: torch.Tensor | StreamedImages, batch_size: int = 64,
            precision: str = DEFAULT_PRECISION) -> np.ndarray:
    """Class probabilities. The encoder runs under ``precision`` (the fine-tune's, as it
    trained); the head and the softmax in fp32, so the scores keep their resolution."""
    classifier.eval()
    device = model_device(classifier)
    autocast = precision_context(device, precision)
    out = []
    for i in range(0, len(images_u8), batch_size):
        images = model_normalise(classifier.model, images_u8[i: i + batch_size].to(device))
        with autocast:
            features = classifier.model.image_features(images)
        out.append(torch.softmax(classifier.head(features.float()), dim=-1).cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, classifier.head.out_features))


def balanced_draws(y_n: np.ndarray, n_classes: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` indices, each from a class drawn uniformly among the classes present."""
    present = [k for k in range(n_classes) if (y_n == k).any()]
    members = [np.flatnonzero(y_n == k) for k in present]
    classes = rng.integers(0, len(present), count)
    return np.array([members[c][rng.integers(0, len(members[c]))] for c in classes])


def finetune(model: nn.Module, train_u8: torch.Tensor | StreamedImages, y_train: np.ndarray,
             val_u8: torch.Tensor | StreamedImages, y_val: np.ndarray,
             n_classes: int, *, steps: int, batch_size: int, lr: float, weight_decay: float, eval_every: int,
             patience: int, seed: int, precision: str = DEFAULT_PRECISION) -> FinetuneResult:
    """Fine-tune ``model`` with a new linear head; the result keeps the best validation state."""
    if len(np.unique(y_train)) < 2:
        raise ValueError(f"the fine-tune training subset has a single class ({np.unique(y_train)})")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    device = model_device(model)
    precision = resolve_precision(precision, device)
    classifier = Classifier(model, n_classes).to(device)
    prefer_fast_cpu_kernels(classifier, device, precision)
    params = [p for p in classifier.parameters()]
    for p in params:
        p.requires_grad_(True)  # full fine-tune: frozen pretraining parts (e.g. LoRA bases) train too
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused_where_supported(params))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + np.cos(np.pi * s / steps)))
    best, best_key, best_step, best_scores, since_best, history = None, None, 0, None, 0, []
    for step in range(1, steps + 1):
        classifier.train()
        index = balanced_draws(y_train, n_classes, batch_size, rng)
        images = model_normalise(model, torch.stack([model.augment(train_u8[i], gen) for i in index])).to(device)
        optimizer.zero_grad(set_to_none=True)
        with precision_context(device, precision):  # the backward too, as the trainer's (precision.py)
            loss = F.cross_entropy(classifier(images), torch.from_numpy(y_train[index]).long().to(device))
            loss.backward()
        optimizer.step()
        schedule.step()
        if step % eval_every == 0 or step == steps:
            scores = predict(classifier, val_u8, precision=precision)
            key = (np.nan_to_num(macro_auc(y_val, scores), nan=-1.0), balanced_accuracy(y_val, scores))
            history.append({"step": step, "loss": float(loss.detach()), "val_auc": key[0], "val_bacc": key[1]})
            if best_key is None or key > best_key:
                best, best_key, best_step, best_scores = copy.deepcopy(classifier.state_dict()), key, step, scores
                since_best = 0
            else:
                since_best += 1
                if since_best >= patience:
                    break
    classifier.load_state_dict(best)
    return FinetuneResult(classifier.eval(), history, best_step, best_scores, precision)
