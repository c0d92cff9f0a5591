import numpy as np
import pandas as pd
import pytest

from benchmark.data.split import fraction_column, make_split, write_split

RATIOS = {"train": 0.7, "val": 0.1, "test": 0.2}
FRACTIONS = [0.01, 0.1, 1.0]


def _manifest(n_patients=400, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        label = int(rng.choice(7, p=[0.1, 0.4, 0.25, 0.08, 0.08, 0.05, 0.04]))
        for k in range(int(rng.integers(2, 9))):
            rows.append({"patient_id": f"{10_000_000 + p}", "image_id": f"{p}-{k}", "birads": label if k == 0 else 1})
    return pd.DataFrame(rows)


def test_no_patient_in_two_splits_and_all_patients_assigned():
    manifest = _manifest()
    split = make_split(manifest, "birads", seed=0, ratios=RATIOS, fractions=FRACTIONS)
    assert split["patient_id"].is_unique
    assert set(split["patient_id"]) == set(manifest["patient_id"])
    joined = manifest.merge(split, on="patient_id")
    assert (joined.groupby("patient_id")["split"].nunique() == 1).all()


def test_ratios_and_stratification():
    split = make_split(_manifest(), "birads", seed=0, ratios=RATIOS, fractions=FRACTIONS)
    shares = split["split"].value_counts(normalize=True)
    for name, ratio in RATIOS.items():
        assert shares[name] == pytest.approx(ratio, abs=0.03)
    for _, group in split.groupby("stratum"):
        if len(group) >= 10:
            assert set(group["split"]) == {"train", "val", "test"}


def test_fractions_are_nested_training_patients_with_every_stratum():
    split = make_split(_manifest(), "birads", seed=0, ratios=RATIOS, fractions=FRACTIONS)
    train = split[split["split"] == "train"]
    sets = {f: set(train.loc[train[fraction_column(f)] == 1, "patient_id"]) for f in FRACTIONS}
    assert sets[0.01] <= sets[0.1] <= sets[1.0] == set(train["patient_id"])
    assert set(train.loc[train["frac_0.01"] == 1, "stratum"]) == set(train["stratum"])
    assert (split.loc[split["split"] != "train", [fraction_column(f) for f in FRACTIONS]] == 0).all().all()


def test_same_seed_same_bytes_other_seed_other_split(tmp_path):
    manifest = _manifest()
    a = write_split(make_split(manifest, "birads", 0, RATIOS, FRACTIONS), tmp_path / "a.csv")
    b = write_split(make_split(manifest.sample(frac=1, random_state=3), "birads", 0, RATIOS, FRACTIONS),
                    tmp_path / "b.csv")
    c = write_split(make_split(manifest, "birads", 1, RATIOS, FRACTIONS), tmp_path / "c.csv")
    assert a == b != c
    assert (tmp_path / "a.sha256").read_text().startswith(a)


def test_validation_scales_with_the_fraction_nested_and_keeps_every_class():
    from benchmark.data.split import validation_column, validation_patients

    rng = np.random.default_rng(4)
    manifest = _manifest(n_patients=2000)
    manifest["density"] = rng.integers(1, 5, len(manifest))  # a second task, not the stratification column
    split = make_split(manifest, "birads", seed=0, ratios=RATIOS, fractions=FRACTIONS, draws=3,
                       class_columns=("birads", "density"))
    val = split[split["split"] == "val"]
    for draw in range(3):
        small, large = (set(val.loc[val[validation_column(f, draw)] == 1, "patient_id"]) for f in (0.01, 0.1))
        assert small <= large <= set(val["patient_id"])  # nested, inside validation
        assert len(large) < 0.25 * len(val) and len(small) < len(large)
        for column in ("birads", "density"):
            classes = manifest[manifest["patient_id"].isin(small)][column].unique()
            assert set(classes) == set(manifest[manifest["patient_id"].isin(val["patient_id"])][column].unique())
    draws = [frozenset(val.loc[val[validation_column(0.1, d)] == 1, "patient_id"]) for d in range(3)]
    assert len(set(draws)) == 3  # each draw its own subset
    full = validation_patients(split, 0.1, 0, False, "split.csv")
    assert full == set(val["patient_id"]) == validation_patients(split, 1.0, 0, True, "split.csv")
    assert validation_patients(split, 0.1, 1, True, "split.csv") == draws[1]


def test_balance_column_draws_every_class_from_every_site_and_keeps_the_split():
    manifest = _manifest(n_patients=300)
    manifest["cancer"] = (manifest["birads"] >= 4).astype(int)
    site = {p: 1 + int(p) % 2 for p in manifest["patient_id"].unique()}
    manifest["site_id"] = manifest["patient_id"].map(site)
    plain = make_split(manifest, "cancer", 0, RATIOS, FRACTIONS, draws=3, class_columns=("cancer",))
    balanced = make_split(manifest, "cancer", 0, RATIOS, FRACTIONS, draws=3, class_columns=("cancer",),
                          balance="site_id")
    assert balanced[["patient_id", "split", "stratum"]].equals(plain[["patient_id", "split", "stratum"]])
    assert list(balanced.columns) == list(plain.columns)  # the balance value is not written
    strata = balanced.set_index("patient_id")["stratum"]
    for draw in range(3):
        for column in (fraction_column(0.01, draw), "val_" + fraction_column(0.01, draw)):
            chosen = balanced.loc[balanced[column] == 1, "patient_id"]
            cells = {(strata[p], site[p]) for p in chosen}
            assert cells == {(k, s) for k in (0, 1) for s in (1, 2)}, column
        small, large = (set(balanced.loc[balanced[fraction_column(f, draw)] == 1, "patient_id"]) for f in (0.01, 0.1))
        assert small < large  # still nested
    plain_cells = {(strata[p], site[p]) for p in plain.loc[plain[fraction_column(0.01)] == 1, "patient_id"]}
    assert len(plain_cells) == 2  # without the column a 1 % draw is one patient per class


def test_balance_column_must_exist():
    from benchmark.errors import BenchmarkError

    with pytest.raises(BenchmarkError, match="balance_by: manifest has no column 'site_id'"):
        make_split(_manifest(), "birads", 0, RATIOS, FRACTIONS, balance="site_id")


def test_the_small_draws_benchmark_draws_like_the_split():
    from benchmark.perf.small_draws import draw_patients

    manifest = _manifest(n_patients=300)
    split = make_split(manifest, "birads", 0, RATIOS, FRACTIONS).set_index("patient_id")
    groups = split.loc[split["split"] == "train", "stratum"]
    for fraction in (0.01, 0.1):
        drawn = draw_patients(groups, fraction, np.random.default_rng(0))
        per_group = groups.loc[sorted(drawn)].value_counts().sort_index()
        in_split = split.loc[(split["split"] == "train") & (split[fraction_column(fraction)] == 1), "stratum"]
        assert per_group.equals(in_split.value_counts().sort_index())  # as many per stratum as the split takes
    assert draw_patients(groups, 0.01, np.random.default_rng(1)) != draw_patients(groups, 0.01, np.random.default_rng(2))
