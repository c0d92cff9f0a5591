"""Label vectors from the tables (MedCLIP's semantic matching in mammography)."""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

from benchmark.data.captions import DENSITY_PHRASE, FINDING_PHRASE

LABEL_VECTOR_NAMES = ([f"density_{k}" for k in (1, 2, 3, 4)] + [f"birads_{k}" for k in range(7)]
                      + ["mass", "calcification"])


def _value(rec: Mapping, key: str):
    value = rec.get(key)
    if value is None or (isinstance(value, float) and np.isnan(value)) or str(value) in ("", "<NA>"):
        return None
    return value


def label_vector(rec: Mapping) -> np.ndarray:
    """density one-hot (4), BI-RADS one-hot (7), mass present, calcification present."""
    vector = np.zeros(len(LABEL_VECTOR_NAMES), dtype=np.float32)
    density, birads = _value(rec, "density"), _value(rec, "birads")
    if density is not None:
        vector[int(density) - 1] = 1
    if birads is not None:
        vector[4 + int(birads)] = 1
    vector[11] = float(_value(rec, "massshape") is not None)
    vector[12] = float(_value(rec, "calcfind") is not None)
    return vector


_MASS = re.compile(r"\bmass\b|asymmetr|distortion|lymph node|tubular structure", re.IGNORECASE)
_CALCIFICATION = re.compile(r"calcification", re.IGNORECASE)
_BIRADS = re.compile(r"BI-RADS Category (\d)", re.IGNORECASE)


def sentence_label_vector(sentence: str) -> np.ndarray:
    """The labels one report sentence states, by a rule-based labeller on its text (MedCLIP
    pairs an image with one sentence and that sentence's own labels): a density phrase sets
    its density, "BI-RADS Category k" or a finding phrase sets BI-RADS k, a mass (or
    asymmetry, distortion, lymph node) or calcification mentioned in a finding sets that
    flag. Sentences that state none (procedure, patient and image info) get all zeros."""
    vector = np.zeros(len(LABEL_VECTOR_NAMES), dtype=np.float32)
    text = sentence.lower()
    for density, phrase in DENSITY_PHRASE.items():
        if phrase.rstrip(".").lower() in text:
            vector[density - 1] = 1
    match = _BIRADS.search(sentence)
    negative = FINDING_PHRASE[1].lower()
    if match and int(match.group(1)) <= 6:
        vector[4 + int(match.group(1))] = 1
    else:
        for birads, phrase in FINDING_PHRASE.items():
            if phrase.lower() in text:
                vector[4 + birads] = 1
                break
    described = text.replace(negative, "")  # "no significant masses, calcifications" states neither
    vector[11] = float(bool(_MASS.search(described)))
    vector[12] = float(bool(_CALCIFICATION.search(described)))
    return vector
