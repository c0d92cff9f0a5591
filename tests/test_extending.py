"""docs/extending.md works as written: its metric and its dataset, added in the places the
document names and nowhere else, reach the table, the wide tables and the commands."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import benchmark.config
import benchmark.metrics
from benchmark.datasets import DATASETS
from benchmark.metrics import METRICS
from benchmark.tables import build_table
from benchmark.wide_tables import to_markdown
from tests.test_bad_input_catalogue import run

REPO = Path(__file__).resolve().parents[1]


def _blocks(language: str) -> list[str]:
    text = (REPO / "docs/extending.md").read_text()
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


@pytest.fixture
def brier():
    """The document's metric block, appended to benchmark/metrics.py (run in its namespace)."""
    namespace = vars(benchmark.metrics)
    namespace.setdefault("np", np)
    exec(_blocks("python")[0], namespace)
    yield METRICS["brier"]
    METRICS.pop("brier")


def test_a_metric_is_one_registry_entry(brier, tmp_path):
    rng = np.random.default_rng(0)
    n = 60
    rows = []
    for model in ("ref", "other"):
        p1 = rng.uniform(0, 1, n)
        rows.append(pd.DataFrame({"dataset": "rsna", "task": "cancer", "protocol": "linear_probe", "fraction": "1",
                                  "model": model, "seed": 0, "draw": 0, "image_id": [f"i{k}" for k in range(n)],
                                  "patient_id": [f"p{k // 2}" for k in range(n)],
                                  "breast_id": [f"p{k // 2}_L" for k in range(n)], "split": "test",
                                  "label": [k % 2 for k in range(n)], "score_0": 1 - p1, "score_1": p1}))
    paths = []
    for frame in rows:
        paths.append(tmp_path / f"{frame['model'].iloc[0]}.csv")
        frame.to_csv(paths[-1], index=False)
    table = build_table(paths, 50, 0, 0.95, "ref")
    row = table[(table.metric == "brier") & (table.model == "other")].iloc[0]
    frame = rows[1]
    expected = (((frame[["score_0", "score_1"]].to_numpy() - np.eye(2)[frame["label"]]) ** 2)
                .sum(axis=1).mean())
    assert row.value == pytest.approx(expected, abs=1e-6)
    assert row.ci_low <= row.value <= row.ci_high and pd.notna(row.delta_vs_ref)  # resampled and paired like the rest
    assert "Brier score (lower is better)" in to_markdown(table)


@pytest.fixture
def site2(rsna_root, tmp_path, monkeypatch):
    """The document's dataset: its module, its schema entry and its prompts, nowhere else."""
    exec(_blocks("python")[1], {"__name__": "benchmark.datasets.rsna_site2"})
    schema = yaml.safe_load(benchmark.config.SCHEMA_PATH.read_text())
    schema["properties"]["data"]["properties"].update(yaml.safe_load(textwrap.dedent(_blocks("yaml")[0])))
    (tmp_path / "schema.yaml").write_text(yaml.safe_dump(schema))
    monkeypatch.setattr(benchmark.config, "SCHEMA_PATH", tmp_path / "schema.yaml")
    prompts = (REPO / "config/prompts.yaml").read_text() + "\n" + _blocks("yaml")[1]
    (tmp_path / "prompts.yaml").write_text(prompts)
    yield tmp_path
    DATASETS.pop("rsna_site2")


def test_a_dataset_is_a_module_a_schema_entry_and_prompts(site2, rsna_root, tmp_path):
    config = yaml.safe_load((REPO / "config/ci.yaml").read_text())
    config["results"] = str(tmp_path / "results")
    config["data"] = {"embed": {"root": str(tmp_path / "embed"), "synthetic": {"patients": 10}},
                      "rsna_site2": {"root": str(rsna_root)}}
    config["tasks"] = ["embed/density", "rsna_site2/cancer"]
    config["zeroshot"]["prompts"] = str(tmp_path / "prompts.yaml")
    config["finetune"]["tasks"] = ["embed/density"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    base = ["--config", str(tmp_path / "config.yaml"), "--dataset", "rsna_site2"]
    cache = tmp_path / "cache"
    for argv in (["check-data"], ["preprocess", "--out-dir", str(cache)],
                 ["split", "--manifest", str(cache / "manifest.csv"), "--out", str(tmp_path / "split.csv")]):
        code, err, out = run([*argv, *base])
        assert code == 0, err
    manifest = pd.read_csv(cache / "manifest.csv")
    assert set(manifest["dataset"]) == {"rsna_site2"} and len(manifest) > 0
    split = pd.read_csv(tmp_path / "split.csv")
    assert set(split["split"]) == {"train", "val", "test"}
    from benchmark.figures.style import dataset_title

    assert dataset_title("rsna_site2") == "RSNA-format, site 2"


def test_a_protocol_is_a_registry_entry_a_module_and_a_schema_section():
    """The document's k-NN blocks are the code as it stands, and nothing else in the code,
    the workflow or the configs' schema names the protocol: the CLI, the rule, the path
    helpers, the tables and the figures reach it through the registry."""
    entry = _blocks("python")[2]
    assert entry in (REPO / "benchmark/protocols.py").read_text()
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    assert schema["properties"]["knn"] == yaml.safe_load(textwrap.dedent(_blocks("yaml")[2]))["knn"]
    places = {path.relative_to(REPO).as_posix()
              for folder in ("benchmark", "models", "workflow")
              for path in (REPO / folder).rglob("*") if path.is_file() and path.suffix in (".py", ".smk", ".yaml", "")
              and re.search(r"\bknn\b", path.read_text(errors="ignore"))}
    assert places == {"benchmark/protocols.py", "benchmark/evaluate/knn.py", "workflow/schemas/config.schema.yaml"}
