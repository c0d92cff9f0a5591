"""Zero-shot classification: one text embedding per class from a prompt ensemble.

Class embedding = mean of the normalised prompt embeddings, renormalised; logits =
the model's logit scale x cosine; scores = softmax (docs/protocol.md, Evaluation and Statistics).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from benchmark.data.captions import metadata_prefix, prefixed_prompts


@torch.no_grad()
def class_embeddings(model, prompts: list[list[str]]) -> torch.Tensor:
    rows = []
    for class_prompts in prompts:
        emb = model.encode_text(class_prompts)  # (P, D), normalised
        mean = emb.mean(dim=0)
        rows.append(mean / mean.norm())
    return torch.stack(rows)  # (K, D)


@torch.no_grad()
def prefixed_zeroshot_scores(model, image_embeddings: np.ndarray, prompts: list[list[str]],
                             records: pd.DataFrame) -> np.ndarray:
    """MaMA's protocol: each image's prompts start with its own procedure and reason
    sentences (``metadata_prefix``), which leak BI-RADS; images sharing a prefix share
    class embeddings."""
    recs = records.to_dict("records")
    prefixes = np.array([metadata_prefix(rec) for rec in recs])
    scores = np.zeros((len(records), len(prompts)))
    for prefix in sorted(set(prefixes)):
        rows = prefixes == prefix
        first = recs[int(np.flatnonzero(rows)[0])]
        scores[rows] = zeroshot_scores(model, image_embeddings[rows], prefixed_prompts(first, prompts))
    return scores


@torch.no_grad()
def zeroshot_scores(model, image_embeddings: np.ndarray, prompts: list[list[str]]) -> np.ndarray:
    classes_kd = class_embeddings(model, prompts)
    image_nd = torch.from_numpy(image_embeddings).to(classes_kd.device, classes_kd.dtype)
    scale = model.logit_scale.detach().clamp(max=float(np.log(100))).exp()
    return torch.softmax(scale * image_nd @ classes_kd.T, dim=-1).cpu().numpy()
