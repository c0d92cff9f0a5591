"""An image's finding labels written as a short templated report: Mammo-CLIP's
"dataset-agnostic" supervision, which turns an image-label dataset into image-text pairs
so that the same contrastive loss learns from it.

Per breast, each finding the labels carry (mass, calcification) gets one sentence,
positive or negative, and an image with neither gets one "no finding" sentence instead
(the official rule: a positive "No Finding" drops the negatives). Each sentence is drawn at
random from its templates and the sentences are shuffled, as the official training
reports are; ``rng=None`` gives the first template in order (its evaluation form). The
templates are this project's wording of the kinds of sentence the official prompt table
holds; that table's location and depth variants need annotations EMBED's labels lack.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from benchmark.data.labels import label_vector

TEMPLATES = {
    ("mass", True): ("there is a mass in the {side} breast", "a mass is seen in the {side} breast",
                     "the {side} breast shows a mass"),
    ("mass", False): ("there is no suspicious mass seen", "no suspicious mass is present",
                      "no mass is seen in the {side} breast"),
    ("calcification", True): ("there are calcifications in the {side} breast",
                              "calcifications are seen in the {side} breast",
                              "the {side} breast shows calcifications"),
    ("calcification", False): ("there are no suspicious calcifications seen",
                               "no suspicious calcification is present",
                               "no calcifications are seen in the {side} breast"),
    ("no finding", True): ("no mammographic evidence of malignancy", "there are no suspicious findings",
                           "there are no suspicious masses, calcifications or architectural distortion"),
}
MASS, CALCIFICATION = 11, 12  # positions in benchmark.data.labels.label_vector


def label_report(rec: Mapping, rng: np.random.Generator | None = None) -> str:
    """The report of ``rec``'s mass and calcification labels (see the module docstring)."""
    side = {"L": "left", "R": "right"}.get(str(rec.get("laterality", "")), "imaged")
    labels = label_vector(rec)
    present = {"mass": bool(labels[MASS]), "calcification": bool(labels[CALCIFICATION])}
    keys = list(present.items()) if any(present.values()) else [("no finding", True)]
    sentences = []
    for key in keys:
        options = TEMPLATES[key]
        sentences.append(options[0 if rng is None else int(rng.integers(len(options)))].format(side=side))
    if rng is not None:
        sentences = [sentences[i] for i in rng.permutation(len(sentences))]
    return ". ".join(sentences) + "."
