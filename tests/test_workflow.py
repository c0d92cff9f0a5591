"""The ci config's whole workflow, end to end, twice: the table is complete and reproducible."""

import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
MODELS = {"mama", "clip", "convirt", "mgca", "medclip", "random_init"}
TRAINED = MODELS - {"random_init"}
REFERENCE = "mama"
TASKS = {("embed", "density"), ("embed", "birads"), ("rsna", "cancer")}


def _run_ci_workflow(out: Path) -> float:
    config = yaml.safe_load((REPO / "config/ci.yaml").read_text())
    config["results"] = str(out)
    for dataset in config["data"].values():
        dataset["root"] = str(out / "data" / Path(dataset["root"]).name)
    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(config))
    start = time.perf_counter()
    run = subprocess.run(["snakemake", f"{out}/table.csv", "--cores", "2", "--configfile", str(path)],
                         capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr[-3000:]
    return time.perf_counter() - start


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("workflow")
    seconds = [_run_ci_workflow(base / "a"), _run_ci_workflow(base / "b")]
    return base / "a", base / "b", seconds


@pytest.mark.slow
def test_ci_workflow_runs_under_three_minutes(two_runs):
    assert max(two_runs[2]) < 180


@pytest.mark.slow
def test_table_has_every_cell_with_ordered_intervals(two_runs):
    table = pd.read_csv(two_runs[0] / "table.csv", dtype={"fraction": str})
    for dataset, task in TASKS:
        for model in MODELS:
            rows = table[(table.dataset == dataset) & (table.task == task) & (table.model == model)]
            cells = set(zip(rows.protocol, rows.fraction.fillna("")))
            expected = {("zeroshot", ""), ("linear_probe", "0.01"), ("linear_probe", "0.1"), ("linear_probe", "1")}
            expected |= {("zeroshot_prefixed", "")} if dataset == "embed" else set()  # MaMA's metadata prompts
            expected |= {("finetune", "1")} if task == "density" else set()  # ci.yaml fine-tunes density only
            assert cells == expected, (dataset, task, model)
            metrics = set(rows.metric)
            assert {"bacc", "auc"} <= metrics and (("auc_breast" in metrics) == (dataset == "rsna"))
            assert ({"sens", "spec"} <= metrics) == (dataset == "rsna")  # binary: threshold from validation
            small = rows[(rows.protocol == "linear_probe") & (rows.fraction != "1")]
            assert (small.seeds == "0/0 0/1 0/2").all() and small.seed_std.notna().all()  # three patient draws
    assert (table.ci_low <= table.value + 1e-9).all() and (table.value <= table.ci_high + 1e-9).all()
    assert table.value.between(0, 1).all()
    others = table[table.model != REFERENCE]
    assert others.delta_vs_ref.notna().all() and table[table.model == REFERENCE].delta_vs_ref.isna().all()


@pytest.mark.slow
def test_two_runs_give_identical_splits_and_table(two_runs):
    a, b, _ = two_runs
    for name in ["splits/embed.csv", "splits/rsna.csv", "table.csv", "table.md", "table.tex"]:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


@pytest.mark.slow
def test_budget_ledger_and_exclusions_are_written(two_runs):
    budget = pd.read_csv(two_runs[0] / "budget.csv")
    assert set(budget.model) == MODELS
    trained = budget.set_index("model")
    assert trained.loc["random_init", "samples_seen"] == 0
    for model in TRAINED:  # the same budget for every method, within one batch
        assert 512 <= trained.loc[model, "samples_seen"] < 512 + trained.loc[model, "batch_size"], model
        assert trained.loc[model, "flops"] > 0, model
    for dataset in ("embed", "rsna"):
        manifest = pd.read_csv(two_runs[0] / f"cache/{dataset}/manifest.csv")
        assert len(manifest) > 0 and (two_runs[0] / f"cache/{dataset}/exclusions.csv").exists()
