"""Subgroup metrics (benchmark/subgroups.py): the table's resamples and values, paired gaps
that find a group a model fails, too-small groups reported as such, bad attributes named."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from benchmark.errors import BenchmarkError
from benchmark.evaluate.predictions import write_predictions
from benchmark.subgroups import age_bands, build_subgroups
from benchmark.tables import build_table
from benchmark.tasks import get_task

SETTINGS = {"cells": [{"protocol": "linear_probe", "fraction": 1.0}], "metrics": ["auc"],
            "attributes": {"rsna": ["site_id", "age_band"]}, "age_bands": [50, 60, 70], "min_patients": 20,
            "min_patients_per_class": 3, "min_usable_share": 0.95}
STATS = {"n_boot": 300, "seed": 0, "ci": 0.95}


def _run(tmp_path, n_patients=300, seeds=(0, 1)):
    """RSNA-like predictions where every model fails site 2 (scores are noise there) and a
    manifest with site and age; site 3 holds only 8 patients."""
    rng = np.random.default_rng(0)
    site = np.where(np.arange(n_patients) < 8, 3, np.where(rng.random(n_patients) < 0.4, 2, 1))
    cancer = rng.random(n_patients) < 0.3
    rows = [{"image_id": f"i{p}_{v}", "patient_id": f"p{p}", "breast_id": f"p{p}_L", "exam_id": f"e{p}",
             "png": f"{p}_{v}.png", "split": split,
             "label": int(cancer[p]), "site_id": int(site[p]), "age": [45, 55, 65, 75, ""][p % 5]}
            for p in range(n_patients) for v in range(2) for split in (["test"] if p % 4 else ["val"])]
    records = pd.DataFrame(rows)
    records.to_csv(tmp_path / "manifest.csv", index=False)
    task = get_task("rsna", "cancer")
    files = []
    for model, strength in (("good", 2.0), ("weak", 0.7)):
        for seed in seeds:
            noise = np.random.default_rng([seed, len(model)]).normal(size=len(records))
            signal = np.where(records["site_id"] == 2, 0.0, strength * records["label"])
            positive = 1 / (1 + np.exp(-(signal + noise)))
            path = tmp_path / f"{model}-{seed}.csv"
            write_predictions(path, records, np.stack([1 - positive, positive], axis=1), task=task,
                              protocol="linear_probe", fraction=1.0, model=model, seed=seed)
            files.append(path)
    return files, records


def test_age_bands_are_half_open_and_missing_ages_are_unknown():
    bands = age_bands(pd.Series([49.9, 50, 59.99, 60, 70, 88, None, "n/a"]), [50, 60, 70])
    assert bands.tolist() == ["<50", "50-59", "50-59", "60-69", ">=70", ">=70", "unknown", "unknown"]


def test_subgroup_values_share_the_table_resamples_and_find_the_failed_site(tmp_path):
    """Four seeds: with two, the seed part of a method-level interval rests on one degree of
    freedom and is too wide to place even this gap (docs/reading-the-table.md)."""
    files, records = _run(tmp_path, seeds=(0, 1, 2, 3))
    table = build_subgroups(files, {"rsna": tmp_path / "manifest.csv"}, SETTINGS, STATS)
    whole = build_table(files, STATS["n_boot"], STATS["seed"], STATS["ci"], None)
    auc = whole[(whole.metric == "auc") & (whole.protocol == "linear_probe")].set_index("model")
    for model, rows in table.groupby("model"):
        assert np.allclose(rows["overall"], auc.loc[model, "value"])  # the table's own value

    site = table[table.attribute == "site_id"].set_index(["model", "subgroup"])
    for model in ("good", "weak"):
        failed = site.loc[(model, "2")]
        assert failed.gap < 0 and failed.method_gap_ci_high < 0 and failed.gap_ci_high < 0
        assert failed.ci_low <= failed.value <= failed.ci_high
        assert site.loc[(model, "1")].gap > 0
    # the full-set value is the mean over seeds of the subgroup's own AUC
    test = records[records.split == "test"]
    in_site = test[test.site_id == 1]
    preds = [pd.read_csv(f) for f in files if f.name.startswith("good")]
    direct = np.mean([roc_auc_score(in_site.label, p.set_index("image_id").loc[in_site.image_id, "score_1"])
                      for p in preds])
    assert site.loc[("good", "1")].value == pytest.approx(direct, abs=1e-6)

    small = site.loc[("good", "3")]
    assert np.isnan(small.value) and np.isnan(small.gap) and small.note.startswith("too small: 6 patients")
    bands = table[(table.attribute == "age_band") & (table.model == "good")].subgroup.tolist()
    assert bands == ["<50", "50-59", "60-69", ">=70", "unknown"]  # in reading order


def test_subgroups_count_their_usable_resamples_and_say_when_too_few(tmp_path):
    """A subgroup with few positive patients loses its positives in some resamples: the
    row counts the resamples it used, and says so when they fall below the share asked for."""
    files, _ = _run(tmp_path, seeds=(0,))
    settings = SETTINGS | {"min_patients": 3, "min_patients_per_class": 1}
    table = build_subgroups(files, {"rsna": tmp_path / "manifest.csv"}, settings, STATS)
    site = table[(table.attribute == "site_id")].set_index(["model", "subgroup"])
    small = site.loc[("good", "3")]  # 6 test patients, one or two of them with cancer
    assert 0 < small.n_usable < STATS["n_boot"] and "resamples usable" in small.note
    large = site.loc[("good", "1")]
    assert large.n_usable == STATS["n_boot"] and not large.note
    strict = build_subgroups(files, {"rsna": tmp_path / "manifest.csv"}, settings | {"min_usable_share": 0.0},
                             STATS).set_index(["model", "attribute", "subgroup"])
    assert not strict.loc[("good", "site_id", "3")].note


def test_a_missing_attribute_column_is_one_line_naming_it(tmp_path):
    files, _ = _run(tmp_path, n_patients=40, seeds=(0,))
    settings = SETTINGS | {"attributes": {"rsna": ["machine_id"]}}
    with pytest.raises(BenchmarkError, match="subgroups: rsna/cancer: subgroup attribute 'machine_id' needs column"):
        build_subgroups(files, {"rsna": tmp_path / "manifest.csv"}, settings, STATS)
