"""Exam structure: which images belong together (MaMA's second view, CC/MLO pairing)."""

from __future__ import annotations

import pandas as pd

PAIRED_VIEWS = {"CC": "MLO", "MLO": "CC"}


def add_view_pairs(manifest: pd.DataFrame) -> pd.DataFrame:
    """Add ``pair_image_id``: the other standard view (CC <-> MLO) of the same breast in the
    same exam, the first in manifest order if there are several; empty if there is none."""
    standard = manifest[manifest["view"].isin(PAIRED_VIEWS)]
    first = standard.drop_duplicates(["breast_id", "view"]).set_index(["breast_id", "view"])["image_id"]
    wanted = pd.MultiIndex.from_arrays([manifest["breast_id"], manifest["view"].map(PAIRED_VIEWS)])
    pairs = first.reindex(wanted).to_numpy()
    return manifest.assign(pair_image_id=pd.Series(pairs, index=manifest.index).fillna(""))


def exam_members(manifest: pd.DataFrame) -> dict[str, list[int]]:
    """Row positions of each exam's images, keyed by exam id."""
    return {exam: list(rows) for exam, rows in manifest.reset_index(drop=True).groupby("exam_id").indices.items()}


def paired_view_members(manifest: pd.DataFrame) -> list[list[int]]:
    """For each row position, the positions of the other standard view (CC <-> MLO) of the
    same breast in the same exam (Mammo-CLIP's second view); empty where there is none."""
    rows = manifest.reset_index(drop=True)
    by_view = rows.groupby(["breast_id", "view"]).indices
    return [list(by_view.get((breast, PAIRED_VIEWS.get(view)), [])) for breast, view in zip(rows["breast_id"], rows["view"])]
