"""Sentence-to-patch alignment maps for a few test images, saved for the alignment figure.

A model shows them when it has the optional contract method
``sentence_patch_similarity(images, captions) -> ((N, S, H', W') similarity, (N, S) mask)``;
for any other model the saved file says ``supported = False`` and the figure skips it.
Examples are test images with a full (unmasked) report, highest BI-RADS first so that
findings are in view, one per patient, ties broken by a seeded order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from benchmark.data.captions import embed_sentences, join_sentences
from benchmark.data.images import load_images, model_normalise
from benchmark.evaluate.device import model_device


def pick_examples(records: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    test = records[records["split"] == "test"]
    has_caption = test.apply(lambda r: embed_sentences(r.to_dict()) is not None, axis=1)
    test = test[has_caption.to_numpy(bool)] if len(test) else test
    order = np.random.default_rng(seed).permutation(len(test))
    ranked = test.iloc[order].assign(_b=pd.to_numeric(test["birads"].iloc[order], errors="coerce"))
    ranked = ranked.sort_values("_b", ascending=False, kind="stable").drop_duplicates("patient_id")
    return ranked.head(n).drop(columns="_b")


@torch.no_grad()
def alignment_maps(model, records: pd.DataFrame, cache_dir: Path, n_examples: int, seed: int) -> dict:
    """Arrays for ``np.savez``: images (N, H, W) uint8, maps (N, S, H', W'), sentences (N, S)
    (empty where a report has fewer sentences, or one was cut by the context length),
    image_id and a short label (N,)."""
    if not hasattr(model, "sentence_patch_similarity"):
        return {"supported": np.array(False)}
    examples = pick_examples(records, n_examples, seed)
    if examples.empty:
        raise ValueError("no test image with a full report to show alignment on")
    sentences = [embed_sentences(r) for r in examples.to_dict("records")]
    images_u8 = load_images(cache_dir, examples["png"].tolist(), model.image_size)
    model.eval()
    maps, mask = model.sentence_patch_similarity(model_normalise(model, images_u8).to(model_device(model)),
                                                 [join_sentences(s) for s in sentences])
    maps, mask = maps.float().cpu(), mask.cpu()
    width = maps.shape[1]
    text = np.array([[s[i] if i < len(s) and mask[n, i] else "" for i in range(width)]
                     for n, s in enumerate(sentences)], dtype=str)
    labels = [f"BI-RADS {int(float(r['birads']))}, {r.get('laterality', '')} {r.get('view', '')}".strip()
              for r in examples.to_dict("records")]
    return {"supported": np.array(True), "image_id": examples["image_id"].to_numpy(str),
            "label": np.array(labels, dtype=str),
            "images": images_u8[:, 0].numpy(), "maps": maps.float().numpy(), "sentences": text}
