"""Label vectors from the tables (MedCLIP's semantic matching in mammography)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

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
