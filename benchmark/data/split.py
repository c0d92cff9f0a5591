"""Patient-level, stratified, seeded train/val/test split with nested label fractions.

A patient's stratum is the largest value of the dataset's stratification column over
their images (e.g. the worst BI-RADS, or cancer). Within each stratum patients are
shuffled with the split seed and cut by the ratios. Label fractions of the training
patients are nested: one seeded order per stratum, and fraction f takes the first
ceil(f * n) patients of every stratum (at least one), so 1 % is inside 10 % inside 100 %.

With a balance column (``split.balance_by``, e.g. RSNA's ``site_id``), the label fractions
and their validation subsets are drawn per (stratum, balance value) instead, so every
site gives every class at least one patient; train, validation and test stay as they
are. Without it, a 1 % draw of two patients can pair one site's positive with another
site's negative, and a probe then learns the site (docs/reading-the-table.md).

A dataset whose release fixes its test split (VinDr-Mammo) gives each record a
``release_split`` of ``train`` or ``test``: its test patients stay in test, and
validation is carved from its training patients by the same stratified draw, with the
ratios' validation share of train + validation.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.data.tables import read_csv
from benchmark.errors import BenchmarkError


def fraction_column(fraction: float, draw: int = 0) -> str:
    """Split-file column of a label fraction; draw 0 is ``frac_<f>``, draw d ``frac_<f>_d<d>``."""
    return f"frac_{fraction:g}" if draw == 0 else f"frac_{fraction:g}_d{draw}"


def fraction_count(fraction: float, n: int) -> int:
    """How many of a group's n patients a label fraction takes: ceil(f * n), at least one."""
    return max(1, math.ceil(fraction * n))


def fraction_draws(fraction: float, draws: int) -> list[int]:
    """The full training set is drawn once; smaller fractions ``draws`` times."""
    return [0] if fraction >= 1 else list(range(draws))


def patient_strata(manifest: pd.DataFrame, column: str) -> pd.Series:
    values = pd.to_numeric(manifest[column], errors="coerce")
    strata = values.groupby(manifest["patient_id"]).max()
    return strata.fillna(-1).astype(int).rename("stratum")


def patient_balance(manifest: pd.DataFrame, column: str) -> pd.Series:
    """Each patient's value of the balance column: the most frequent over their images
    (ties: the smallest); a patient without one forms their own group, ``""``."""
    values = manifest[column].astype("string").fillna("")
    return values.groupby(manifest["patient_id"]).agg(lambda v: sorted(v.mode())[0]).rename("balance")


def make_split(manifest: pd.DataFrame, stratify: str, seed: int, ratios: dict[str, float],
               fractions: list[float], draws: int = 1, class_columns: tuple[str, ...] = (),
               balance: str | None = None) -> pd.DataFrame:
    """Patients to train/val/test per stratum; then, within the training patients, nested
    label fractions (each fraction's patients include the smaller fractions'), drawn
    ``draws`` times with independent seeds for fractions below 1, per stratum or per
    (stratum, ``balance`` value); and for each such (fraction, draw) a validation subset
    scaled the same way (``validation_columns``)."""
    if abs(sum(ratios.values()) - 1) > 1e-6:
        raise BenchmarkError(f"split.ratios must sum to 1, got {ratios}")
    if stratify not in manifest.columns:
        raise BenchmarkError(f"split.stratify: manifest has no column {stratify!r}")
    if balance is not None and balance not in manifest.columns:
        raise BenchmarkError(f"split.balance_by: manifest has no column {balance!r}")
    strata = patient_strata(manifest, stratify)
    released = release_test_patients(manifest)
    if released is not None:  # the release's test split stays; val comes from its training patients
        train_share = ratios["train"] / (ratios["train"] + ratios["val"])
        ratios = {"train": train_share, "val": 1 - train_share, "test": 0.0}
    rng = np.random.default_rng([seed, 1])
    rows = []
    for stratum in sorted(strata.unique()):
        patients = np.array(sorted(strata.index[strata == stratum]))
        if released is not None:
            rows += [{"patient_id": p, "split": "test", "stratum": int(stratum)} for p in patients if p in released]
            patients = np.array([p for p in patients if p not in released])
        patients = patients[rng.permutation(len(patients))]
        n = len(patients)
        n_train = round(ratios["train"] * n)
        n_val = round(ratios["val"] * n)
        if released is not None:
            n_val = n - n_train  # no test to fill here: the rest of the stratum validates
        elif n >= 3:  # keep a stratum represented in val and test where it can be
            n_val = max(n_val, 1)
            n_train = min(n_train, n - n_val - 1)
        for k, patient in enumerate(patients):
            split = "train" if k < n_train else "val" if k < n_train + n_val else "test"
            rows.append({"patient_id": patient, "split": split, "stratum": int(stratum)})
    table = pd.DataFrame(rows)
    groups = ["stratum"]
    if balance is not None:
        table["balance"] = table["patient_id"].map(patient_balance(manifest, balance))
        groups.append("balance")

    for draw in range(draws):
        frac_rng = np.random.default_rng([seed, 2] if draw == 0 else [seed, 2, draw])
        drawn = [f for f in fractions if draw in fraction_draws(f, draws)]
        for fraction in drawn:
            table[fraction_column(fraction, draw)] = 0
        for _, group in table[table["split"] == "train"].groupby(groups, sort=True):
            order = group.index.to_numpy()[frac_rng.permutation(len(group))]
            for fraction in drawn:
                table.loc[order[:fraction_count(fraction, len(order))], fraction_column(fraction, draw)] = 1
    validation_columns(table, manifest, seed, fractions, draws, class_columns, tuple(groups))
    table = table.drop(columns=["balance"], errors="ignore")
    return table.sort_values(["split", "patient_id"]).reset_index(drop=True)


def release_test_patients(manifest: pd.DataFrame) -> set | None:
    """The patients a release puts in its test split (``release_split``), or None when the
    manifest has no such column. A patient with images on both sides is one line."""
    if "release_split" not in manifest.columns:
        return None
    sides = manifest.groupby("patient_id")["release_split"].agg(lambda v: set(v.dropna()))
    mixed = sides[sides.map(len) > 1]
    if len(mixed):
        raise BenchmarkError(f"release_split: patient {mixed.index[0]!r} has images in both the release's "
                             f"training and test splits ({len(mixed)} such patients); one patient, one split")
    return set(sides.index[sides.map(lambda v: v == {"test"})])


def validation_column(fraction: float, draw: int = 0) -> str:
    """Split-file column of the validation subset that goes with a label fraction's draw."""
    return "val_" + fraction_column(fraction, draw)


def validation_columns(table: pd.DataFrame, manifest: pd.DataFrame, seed: int, fractions: list[float], draws: int,
                       class_columns: tuple[str, ...], groups: tuple[str, ...] = ("stratum",)) -> None:
    """Validation subsets that scale with the label fraction (``split.validation: scaled``):
    for each (fraction below 1, draw), the first ceil(f * n) validation patients of every
    group (``groups``: the stratum, or the stratum and the balance value) in a seeded order
    (at least one; nested: a smaller fraction's subset is inside a larger one's), plus, for
    every class a task has in the full validation split but not in the subset, the first
    patient in that order who has it."""
    labels = {c: pd.to_numeric(manifest[c], errors="coerce").groupby(manifest["patient_id"]).agg(set)
              for c in class_columns if c in manifest.columns}
    for draw in range(draws):
        rng = np.random.default_rng([seed, 3, draw])
        drawn = [f for f in fractions if f < 1 and draw in fraction_draws(f, draws)]
        validation = table[table["split"] == "val"]
        order = validation.index.to_numpy()[rng.permutation(len(validation))]
        for fraction in drawn:
            column = validation_column(fraction, draw)
            table[column] = 0
            for _, group in validation.loc[order].groupby(list(groups), sort=True):
                table.loc[group.index[:fraction_count(fraction, len(group))], column] = 1
            for by_patient in labels.values():
                classes_of = table.loc[order, "patient_id"].map(by_patient)
                missing = set().union(*classes_of) - set().union(*classes_of[table.loc[order, column] == 1])
                for value in sorted(v for v in missing if v == v):  # NaN (no label) is not a class
                    first = next(i for i in order if value in classes_of[i])
                    table.loc[first, column] = 1


def validation_patients(split: pd.DataFrame, fraction: float, draw: int, scaled: bool, path: Path) -> set:
    """The validation patients of one (fraction, draw): the scaled subset, or all of them
    (``split.validation: full``, and always at fraction 1)."""
    validation = split["split"] == "val"
    if not scaled or fraction >= 1:
        return set(split.loc[validation, "patient_id"])
    column = validation_column(fraction, draw)
    if column not in split.columns:
        raise BenchmarkError(f"{path}: no column {column} (a split file from before scaled validation: rerun the "
                             "split step, or set split.validation: full)")
    return set(split.loc[validation & (split[column] == 1), "patient_id"])


def write_split(table: pd.DataFrame, path: Path) -> str:
    """Write the split and ``<path>.sha256``; return the hash."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    path.with_suffix(".sha256").write_text(f"{digest}  {path.name}\n")
    return digest


def read_split(path: Path) -> pd.DataFrame:
    return read_csv(path, "split file", ["patient_id", "split"], dtype={"patient_id": str}, unique="patient_id",
                    hint=" (the split step writes it)")


def fraction_patients(split: pd.DataFrame, fraction: float, draw: int, path: Path) -> set:
    """The training patients of one (fraction, draw) of a split file."""
    column = fraction_column(fraction, draw)
    if column not in split.columns:
        raise BenchmarkError(f"{path}: no column {column} (fraction {fraction:g}, draw {draw}: not in "
                             "split.fractions / split.draws)")
    return set(split.loc[(split["split"] == "train") & (split[column] == 1), "patient_id"])


def check_split(table: pd.DataFrame, manifest: pd.DataFrame, tasks: list, dataset: str) -> list[str]:
    """Refuse a split that leaves a task without one of its classes in test (when the data
    has that class); return one-line warnings (a single patient, a class absent from
    validation)."""
    warnings = []
    if table["patient_id"].nunique() < 2:
        warnings.append(f"split {dataset}: only {table['patient_id'].nunique()} patient; every split but one is empty")
    where = manifest[["patient_id"]].merge(table[["patient_id", "split"]], on="patient_id", how="left")["split"]
    for task in tasks:
        labels = pd.to_numeric(manifest[task.column], errors="coerce")
        for k in sorted(labels.dropna().astype(int).unique()):
            for part in ("test", "val"):
                if not ((labels == k) & (where.to_numpy() == part)).any():
                    patients = manifest.loc[labels == k, "patient_id"].nunique()
                    line = (f"split {dataset}: task {task.name}: no {part} image of class {k} "
                            f"({patients} patient(s) have it)")
                    if part == "test":
                        raise BenchmarkError(line + "; the test metric would be undefined or forced "
                                             "(more patients, or another split.seed)")
                    warnings.append(line)
    return warnings


def split_hash(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def split_records(manifest: pd.DataFrame, split: pd.DataFrame, splits: tuple[str, ...]) -> pd.DataFrame:
    """Manifest rows of the given splits, with a ``split`` column, in manifest order."""
    table = manifest.merge(split[["patient_id", "split"]], on="patient_id", how="inner", validate="many_to_one")
    return table[table["split"].isin(splits)].reset_index(drop=True)
