import pandas as pd
import pytest

from benchmark.data.rsna import load_rsna
from benchmark.errors import BenchmarkError


def test_breast_ids_site_and_machine_are_kept(rsna_root):
    records, excluded = load_rsna(rsna_root)
    table = pd.read_csv(rsna_root / "train.csv", dtype=str)
    assert excluded.empty and len(records) == len(table)
    assert (records.breast_id == records.patient_id + "_" + records.laterality).all()
    assert set(records.machine_id) == set(table.machine_id) and set(records.site_id) == set(table.site_id)
    # density letters become 1..4, site 2 has none
    assert set(records.density.dropna()) <= {1, 2, 3, 4}


def test_bad_rows_are_recorded_and_bad_tables_stop(rsna_root, tmp_path):
    table = pd.read_csv(rsna_root / "train.csv", dtype=str)
    table = pd.concat([table, table.iloc[[0]]], ignore_index=True)
    table.loc[2, "cancer"] = "2"
    table.to_csv(tmp_path / "train.csv", index=False)
    records, excluded = load_rsna(tmp_path)
    reasons = dict(zip(excluded.source, excluded.reason))
    assert reasons[f"train.csv:row {len(table) + 1}"] == "duplicate image id"
    assert reasons["train.csv:row 4"] == "cancer is '2', not 0 or 1"
    assert len(records) + len(excluded) == len(table)

    table.drop(columns=["laterality"]).to_csv(tmp_path / "train.csv", index=False)
    with pytest.raises(BenchmarkError, match=r"train.csv: table is missing column\(s\) laterality"):
        load_rsna(tmp_path)
