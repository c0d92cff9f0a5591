"""The evaluation protocol's guarantees (docs/protocol.md, Evaluation and Statistics): nothing is chosen on test,
features are extracted once, degenerate inputs fail clearly, the wide tables render."""

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from benchmark.cli import main
from benchmark.data.split import make_split, write_split
from benchmark.errors import BenchmarkError
from benchmark.evaluate.predictions import read_predictions
from benchmark.tables import build_table
from benchmark.wide_tables import to_latex, to_markdown

REPO = Path(__file__).resolve().parents[1]


def _probe_inputs(tmp_path: Path, seed: int = 0):
    """A manifest, split and features file where density is visible in the features."""
    rng = np.random.default_rng(seed)
    n_patients = 120
    rows = []
    for p in range(n_patients):
        density = 1 + p % 4
        for view in range(2):
            rows.append({"image_id": f"i{p}_{view}", "patient_id": f"p{p}", "breast_id": f"p{p}_L",
                         "exam_id": f"e{p}", "density": density, "birads": 1, "png": f"x{p}_{view}.png"})
    manifest = pd.DataFrame(rows)
    manifest.to_csv(tmp_path / "manifest.csv", index=False)
    write_split(make_split(manifest, "density", 0, {"train": 0.6, "val": 0.2, "test": 0.2}, [0.1, 1.0], 3),
                tmp_path / "split.csv")
    features = rng.normal(size=(len(manifest), 16)) + np.eye(16)[manifest["density"].to_numpy()] * 1.5
    np.savez(tmp_path / "features.npz", image_id=manifest["image_id"].to_numpy(str), features=features,
             embeddings=features[:, :8])
    config = yaml.safe_load((REPO / "config/ci.yaml").read_text())
    config["split"]["fractions"] = [0.1, 1.0]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    return manifest


def _run_probe(tmp_path: Path, tag: str) -> list[Path]:
    outs = [tmp_path / tag / f"{f}-{d}.csv" for f, d in [(0.1, 0), (0.1, 1), (0.1, 2), (1.0, 0)]]
    main(["probe", "--config", str(tmp_path / "config.yaml"), "--model", "m", "--seed", "0", "--task",
          "embed/density", "--manifest", str(tmp_path / "manifest.csv"), "--split", str(tmp_path / "split.csv"),
          "--features", str(tmp_path / "features.npz"), "--fraction", "0.1", "1.0", "--out", *map(str, outs)])
    return outs


def test_permuting_test_labels_changes_no_choice_and_no_score(tmp_path):
    manifest = _probe_inputs(tmp_path)
    before = _run_probe(tmp_path, "a")
    split = pd.read_csv(tmp_path / "split.csv", dtype={"patient_id": str})
    test_patients = set(split.loc[split["split"] == "test", "patient_id"])
    is_test = manifest["patient_id"].isin(test_patients).to_numpy()
    permuted = manifest.copy()
    permuted.loc[is_test, "density"] = np.random.default_rng(1).permutation(manifest.loc[is_test, "density"])
    assert (permuted["density"] != manifest["density"]).any()
    permuted.to_csv(tmp_path / "manifest.csv", index=False)
    after = _run_probe(tmp_path, "b")
    for a, b in zip(before, after):
        choice_a, choice_b = (json.loads(p.with_suffix(".json").read_text()) for p in (a, b))
        assert choice_a["chosen_C"] == choice_b["chosen_C"] and choice_a["sweep"] == choice_b["sweep"]
        pa, pb = read_predictions(a), read_predictions(b)
        assert np.array_equal(pa.filter(like="score_").to_numpy(), pb.filter(like="score_").to_numpy())
        assert not np.array_equal(pa["label"].to_numpy(), pb["label"].to_numpy())


def test_a_choice_on_the_grid_edge_is_recorded_and_warned(tmp_path, capsys):
    from benchmark.evaluate.probe import grid_edge_warning

    assert grid_edge_warning(1e-4, [1e-4, 1.0, 1e4]).startswith("chosen C 0.0001 is the smallest")
    assert grid_edge_warning(1.0, [1e-4, 1.0, 1e4]) is None
    _probe_inputs(tmp_path)
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    config["linear_probe"]["C"] = [1e-6]  # a one-value grid is no sweep: no warning
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    outs = _run_probe(tmp_path, "one")
    assert json.loads(outs[-1].with_suffix(".json").read_text())["chosen_at_grid_edge"] is False
    config["linear_probe"]["C"] = [1e-7, 1e-6]  # two values: whichever wins is on an edge
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    outs = _run_probe(tmp_path, "two")
    record = json.loads(outs[-1].with_suffix(".json").read_text())
    assert record["chosen_at_grid_edge"] is True and "widen linear_probe.C" in capsys.readouterr().err


def test_the_fixed_c_row_fits_the_configured_c_without_a_validation_choice(tmp_path):
    _probe_inputs(tmp_path)
    cells = [(0.1, 0), (0.1, 1), (0.1, 2), (1.0, 0)]
    chosen = [tmp_path / "c" / f"{f}-{d}.csv" for f, d in cells]
    fixed = [tmp_path / "f" / f"{f}-{d}.csv" for f, d in cells]
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    config["linear_probe"].update(C=[1e-3, 1e-2, 1e-1, 1.0], fixed_C=1e-3)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    main(["probe", "--config", str(tmp_path / "config.yaml"), "--model", "m", "--seed", "0", "--task",
          "embed/density", "--manifest", str(tmp_path / "manifest.csv"), "--split", str(tmp_path / "split.csv"),
          "--features", str(tmp_path / "features.npz"), "--fraction", "0.1", "1.0", "--out", *map(str, chosen),
          "--fixed-c-out", *map(str, fixed)])
    for c, f in zip(chosen, fixed):
        record = json.loads(c.with_suffix(".json").read_text())
        at_fixed = read_predictions(f)
        assert set(at_fixed.protocol) == {"linear_probe_fixed_c"}
        same_c = record["chosen_C"] == 1e-3
        scores_equal = np.allclose(read_predictions(c).filter(like="score_"), at_fixed.filter(like="score_"))
        assert scores_equal == same_c  # the fixed row equals the chosen one exactly when validation chose that C


def test_the_fixed_c_row_is_the_same_model_whether_its_c_is_in_the_grid_or_fitted_alone(tmp_path):
    """A fixed C inside the grid reuses the sweep's fit at that C; it must equal a fit of its own."""
    _probe_inputs(tmp_path)
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    scores = {}
    for name, grid in (("in_grid", [1e-3, 1e-2, 1e-1, 1.0]), ("alone", [1e-1, 1.0])):
        config["linear_probe"].update(C=grid, fixed_C=1e-2)
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(config))
        chosen, fixed = tmp_path / name / "c.csv", tmp_path / name / "f.csv"
        main(["probe", "--config", str(tmp_path / f"{name}.yaml"), "--model", "m", "--seed", "0", "--task",
              "embed/density", "--manifest", str(tmp_path / "manifest.csv"), "--split", str(tmp_path / "split.csv"),
              "--features", str(tmp_path / "features.npz"), "--fraction", "1.0", "--out", str(chosen),
              "--fixed-c-out", str(fixed)])
        scores[name] = read_predictions(fixed).filter(like="score_").to_numpy()
    assert np.array_equal(scores["in_grid"], scores["alone"])


def test_fraction_draws_are_nested_and_differ(tmp_path):
    _probe_inputs(tmp_path)
    split = pd.read_csv(tmp_path / "split.csv")
    assert {"frac_0.1", "frac_0.1_d1", "frac_0.1_d2", "frac_1"} <= set(split.columns)
    assert "frac_1_d1" not in split.columns  # the full set is drawn once
    draws = [set(split.index[split[c] == 1]) for c in ("frac_0.1", "frac_0.1_d1", "frac_0.1_d2")]
    assert len({frozenset(d) for d in draws}) == 3
    assert all(d <= set(split.index[split["frac_1"] == 1]) for d in draws)


def test_features_are_extracted_once_per_model_and_dataset():
    """However many fractions and draws are probed, one features job per (model, seed, dataset)."""
    config = yaml.safe_load((REPO / "config/ci.yaml").read_text())
    run = subprocess.run(["snakemake", "-n", f"{config['results']}/table.csv", "--configfile", "config/ci.yaml",
                          "--forceall"], capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr[-2000:]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)\s*$", run.stdout, flags=re.M))
    models, tasks = len(config["models"]), len(config["tasks"])
    datasets = {task.split("/")[0] for task in config["tasks"]}
    assert all(int(counts[f"features_{dataset}"]) == models for dataset in datasets)
    assert int(counts["image_statistics"]) == len(datasets)  # the hand-crafted baseline's features, once per dataset
    # one job writes every (fraction, draw); the baseline's probe is one more job per task
    assert int(counts["linear_probe"]) == (models + 1) * tasks


def _predictions(tmp_path, scores, labels, patients, name="p.csv", model="m"):
    frame = pd.DataFrame({"dataset": "rsna", "task": "cancer", "protocol": "zeroshot", "fraction": "",
                          "model": model, "seed": 0, "draw": 0, "image_id": [f"i{i}" for i in range(len(labels))],
                          "patient_id": patients, "breast_id": [f"{p}_L" for p in patients], "split": "test",
                          "label": labels, "score_0": 1 - np.asarray(scores, float), "score_1": scores})
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def test_nan_score_stops_the_table_naming_file_and_row(tmp_path):
    path = _predictions(tmp_path, [0.1, float("nan"), 0.7], [0, 1, 1], ["a", "b", "c"])
    with pytest.raises(BenchmarkError, match=r"p\.csv: row 3 \(image i1\)"):
        build_table([path], 50, 0, 0.95, None)


def test_single_class_test_set_gives_nan_with_its_reason(tmp_path):
    path = _predictions(tmp_path, [0.1, 0.4, 0.7], [0, 0, 0], ["a", "b", "c"])
    table = build_table([path], 50, 0, 0.95, None)
    auc = table[table.metric == "auc"].iloc[0]
    assert np.isnan(auc.value) and "single class" in auc.note
    assert table[table.metric == "bacc"].value.notna().all()


def test_delong_and_wide_tables_on_a_two_model_table(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    patients = [f"p{i}" for i in range(300)]
    good = _predictions(tmp_path, np.clip(0.5 * labels + rng.random(300) * 0.7, 0, 1), labels, patients, "a.csv", "a")
    weak = _predictions(tmp_path, np.clip(0.1 * labels + rng.random(300), 0, 1), labels, patients, "b.csv", "b")
    table = build_table([good, weak], 500, 0, 0.95, "a")
    row = table[(table.model == "b") & (table.metric == "auc")].iloc[0]
    assert row.delta_vs_ref < 0 and row.p_value < 0.01 and row.p_delong < 0.01
    md, tex = to_markdown(table), to_latex(table)
    best = table[(table.model == "a") & (table.metric == "auc")].iloc[0]
    assert f"**{best.value:.3f} [{best.ci_low:.3f}, {best.ci_high:.3f}]**" in md
    assert f"\\textbf{{{best.value:.3f}" in tex and tex.count("\\begin{tabular}") == 8  # auc, bacc, auc_breast, pf1_breast; deltas
    assert f"{row.delta_vs_ref:+.3f} [{row.method_delta_ci_low:+.3f}, {row.method_delta_ci_high:+.3f}]*" in md
    assert "| a | reference |" in md
    assert set(table.metric) == {"auc", "bacc", "auc_breast", "pf1_breast"}  # no validation rows: no sens/spec


def test_primary_comparisons_are_holm_adjusted_as_one_family(tmp_path):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 200)
    patients = [f"p{i}" for i in range(200)]
    files = [_predictions(tmp_path, np.clip(strength * labels + rng.random(200), 0, 1), labels, patients,
                          f"{model}.csv", model) for model, strength in (("ref", 0.5), ("b", 0.2), ("c", 0.45),
                                                                         ("control", 0.0))]
    table = build_table(files, 300, 0, 0.95, "ref", primary=[{"protocol": "zeroshot", "fraction": None,
                                                                "metric": "auc"}], controls=["control"])
    family = table[table.p_adjusted.notna()]
    assert set(zip(family.model, family.metric)) == {("b", "auc"), ("c", "auc")}  # not the control, not bacc
    p_values = family.set_index("model")["p_value"]
    smaller, larger = p_values.idxmin(), p_values.idxmax()
    adjusted = family.set_index("model")["p_adjusted"]
    assert adjusted[smaller] == pytest.approx(min(1, 2 * p_values[smaller]), abs=1e-6)
    assert adjusted[larger] == pytest.approx(max(adjusted[smaller], p_values[larger]), abs=1e-6)


def test_method_level_interval_adds_the_spread_of_seeds_and_draws(tmp_path):
    """Two pretraining seeds that disagree: the conditional interval (seeds fixed) ignores
    it, the method-level one (seeds, draws and patients resampled together) does not; with
    one seed and one draw the two are the same."""
    rng = np.random.default_rng(2)
    n = 300
    labels = rng.integers(0, 2, n)
    patients = [f"p{i // 2}" for i in range(n)]
    noise = rng.random((2, 3, n))
    files = []
    for s, strength in enumerate((0.1, 0.6)):  # seed 1 learned far more than seed 0
        for d in range(3):
            path = _predictions(tmp_path, np.clip(strength * labels + noise[s, d], 0, 1), labels, patients,
                                f"m_{s}_{d}.csv", "m")
            frame = pd.read_csv(path).assign(protocol="linear_probe", fraction="0.1", seed=s, draw=d)
            frame.to_csv(path, index=False)
            files.append(path)
    single = _predictions(tmp_path, np.clip(0.3 * labels + noise[0, 0], 0, 1), labels, patients, "r.csv", "r")
    table = build_table(files + [single], 400, 0, 0.95, None)
    m = table[(table.model == "m") & (table.metric == "auc")].iloc[0]
    assert m.seeds == "0/0 0/1 0/2 1/0 1/1 1/2" and m.seed_std > 0.1
    assert m.method_ci_high - m.method_ci_low > 2 * (m.ci_high - m.ci_low)
    r = table[(table.model == "r") & (table.metric == "auc")].iloc[0]
    assert (r.method_ci_low, r.method_ci_high) == (r.ci_low, r.ci_high)


def test_sensitivity_and_specificity_use_the_validation_threshold_only(tmp_path):
    from benchmark.stats import specificity_threshold, youden_threshold

    rng = np.random.default_rng(3)
    n = 400
    labels = rng.integers(0, 2, n)
    scores = np.clip(0.3 * labels + rng.random(n) * 0.8, 0, 1)
    split = np.where(np.arange(n) < 200, "val", "test")
    patients = [f"p{i}" for i in range(n)]
    path = _predictions(tmp_path, scores, labels, patients)
    frame = pd.read_csv(path).assign(split=split, breast_id=[f"p{i}_L" for i in range(n)])
    for permute in (False, True):
        if permute:  # new test labels: the threshold, chosen on validation, must not move
            test = frame["split"] == "test"
            frame.loc[test, "label"] = rng.permutation(frame.loc[test, "label"].to_numpy())
        frame.to_csv(path, index=False)
        table = build_table([path], 100, 0, 0.95, None).set_index("metric")
        val, test = frame[frame.split == "val"], frame[frame.split == "test"]
        threshold = youden_threshold(val["label"].to_numpy(), val["score_1"].to_numpy())
        predicted = test["score_1"].to_numpy() >= threshold
        positive = test["label"].to_numpy() == 1
        assert table.loc["sens_breast", "value"] == pytest.approx(predicted[positive].mean(), abs=1e-6)
        assert table.loc["spec_breast", "value"] == pytest.approx((~predicted[~positive]).mean(), abs=1e-6)
        # binary balanced accuracy at its own (image-level) validation threshold: here one image per breast
        assert table.loc["bacc", "value"] == pytest.approx(
            (predicted[positive].mean() + (~predicted[~positive]).mean()) / 2, abs=1e-6)
        spec90 = specificity_threshold(val["label"].to_numpy(), val["score_1"].to_numpy(), 0.9)
        at90 = test["score_1"].to_numpy() >= spec90
        assert table.loc["sens_spec90_breast", "value"] == pytest.approx(at90[positive].mean(), abs=1e-6)
        p_test = test["score_1"].to_numpy()
        pf1 = 2 * p_test[positive].sum() / (p_test.sum() + positive.sum())
        assert table.loc["pf1_breast", "value"] == pytest.approx(pf1, abs=1e-6)
        assert table.loc["auc", "n_images"] == 200  # validation rows never enter the test metrics


def test_finetune_learns_a_visible_label_and_keeps_the_best_validation_state(tokenizer):
    import torch

    from benchmark.evaluate.finetune import finetune, predict
    from benchmark.registry import build_model
    from benchmark.stats import macro_auc

    torch.manual_seed(0)
    model = build_model("clip", "tiny", tokenizer=tokenizer)
    gen = torch.Generator().manual_seed(0)

    def images(y):  # class 1 is brighter: learnable, not trivial under the augmentations' jitter
        base = torch.randint(0, 150, (len(y), 1, model.image_size, model.image_size), generator=gen)
        return (base + torch.from_numpy(y)[:, None, None, None] * 60).clamp(0, 255).to(torch.uint8)

    y_train, y_val = np.arange(64) % 2, np.arange(32) % 2
    images_val = images(y_val)
    result = finetune(model, images(y_train), y_train, images_val, y_val, 2, steps=40,
                      batch_size=16, lr=1e-3, weight_decay=0.0, eval_every=10, patience=2, seed=0)
    kept = next(h for h in result.history if h["step"] == result.best_step)
    assert macro_auc(y_val, predict(result.classifier, images(y_val))) > 0.8
    assert kept["val_auc"] == max(h["val_auc"] for h in result.history)
    assert kept == max(result.history, key=lambda h: (h["val_auc"], h["val_bacc"]))  # first of any ties
    np.testing.assert_array_equal(result.val_scores, predict(result.classifier, images_val))  # the kept state's
    with pytest.raises(ValueError, match="single class"):
        finetune(model, images(y_train), np.zeros(64, int), images(y_val), y_val, 2, steps=1, batch_size=4, lr=1e-3,
                 weight_decay=0.0, eval_every=1, patience=1, seed=0)


def test_finetune_on_streamed_images_equals_finetune_in_memory(tokenizer, tmp_path):
    """Images above images.memory_gib are read from the PNG cache: same classifier, same scores."""
    import torch
    from PIL import Image

    from benchmark.data.images import StreamedImages, load_images
    from benchmark.evaluate.finetune import finetune, predict
    from benchmark.registry import build_model

    rng = np.random.default_rng(0)
    y_train, y_val = np.arange(24) % 2, np.arange(12) % 2
    names = {}
    for part, y in (("train", y_train), ("val", y_val)):
        names[part] = [f"{part}{i}.png" for i in range(len(y))]
        for name, label in zip(names[part], y):
            Image.fromarray((rng.integers(0, 150, (40, 30)) + 60 * label).astype(np.uint8)).save(tmp_path / name)
    scores = {}
    for kind, open_set in (("memory", load_images), ("streamed", StreamedImages)):
        torch.manual_seed(0)
        model = build_model("clip", "tiny", tokenizer=tokenizer)
        train, val = (open_set(tmp_path, names[part], model.image_size) for part in ("train", "val"))
        classifier = finetune(model, train, y_train, val, y_val, 2, steps=6, batch_size=8, lr=1e-3,
                              weight_decay=0.0, eval_every=3, patience=2, seed=0).classifier
        scores[kind] = predict(classifier, val, batch_size=5)
    assert isinstance(val, StreamedImages)
    np.testing.assert_array_equal(scores["memory"], scores["streamed"])


def test_the_finetune_budget_benchmark_changes_only_the_named_settings():
    from benchmark.perf.finetune_budget import variant_settings

    finetune = {"steps": 40, "lr": 1.0e-4, "batch_size": 16}
    assert variant_settings(finetune, "lr=3e-4,steps=80") == {"steps": 80, "lr": 3.0e-4, "batch_size": 16}
    assert finetune == {"steps": 40, "lr": 1.0e-4, "batch_size": 16}  # the baseline is left as it was
    with pytest.raises(BenchmarkError, match="finetune has no key 'rate'"):
        variant_settings(finetune, "rate=3e-4")


def test_the_finetune_budget_benchmark_counts_gains_of_pretrained_models_only():
    from benchmark.perf.finetune_budget import control_gains

    table = pd.DataFrame({
        "model": ["clip", "clip_shuffled", "clip_untrained", "mama", "mama"],
        "metric": ["auc", "auc", "auc", "auc", "balanced_accuracy"],
        "delta_vs_control": [0.05, 0.09, np.nan, 0.02, 0.3],
        "control_delta_ci_low": [0.01, 0.02, np.nan, -0.01, 0.2],
    })
    gains = control_gains(table, ["clip_shuffled", "clip_untrained"])
    assert gains["model"].tolist() == ["clip", "mama"]  # a control and a non-AUC row are not counted
    assert gains["above_zero"].tolist() == [True, False]


def test_mama_sgd_probe_option_chooses_its_epoch_on_validation(tmp_path):
    _probe_inputs(tmp_path)
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    config["linear_probe"] |= {"solver": "mama_sgd", "epochs": 60, "batch_size": 32}  # lr 5e-4 learns slowly
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    before = _run_probe(tmp_path, "a")
    choice = json.loads(before[-1].with_suffix(".json").read_text())
    assert choice["solver"] == "mama_sgd" and 1 <= choice["chosen_epoch"] <= 60 and len(choice["sweep"]) == 60
    best = max(choice["sweep"], key=lambda r: (r["val_auc"], r["val_bacc"], -r["epoch"]))
    assert best["epoch"] == choice["chosen_epoch"]
    table = build_table(before, 100, 0, 0.95, None)
    assert best["val_auc"] > choice["sweep"][0]["val_auc"] + 0.1  # it learns
    assert table[(table.metric == "auc") & (table.fraction == "1")].value.iloc[0] > 0.7  # density is in the features


def test_knn_scores_equal_a_vote_by_vote_reference():
    from benchmark.evaluate.knn import knn_scores

    rng = np.random.default_rng(0)
    x_train, y_train, x_eval = rng.normal(size=(40, 6)), rng.integers(0, 3, 40), rng.normal(size=(9, 6))
    scores = knn_scores(x_train, y_train, x_eval, 3, k=5, temperature=0.1)
    for i, x in enumerate(x_eval):
        similarity = [x @ t / np.linalg.norm(x) / np.linalg.norm(t) for t in x_train]
        votes = np.zeros(3)
        for j in np.argsort(similarity)[::-1][:5]:
            votes[y_train[j]] += np.exp(similarity[j] / 0.1)
        np.testing.assert_allclose(scores[i], votes / votes.sum(), rtol=1e-10)
    assert knn_scores(x_train[:3], y_train[:3], x_eval, 3, k=20, temperature=0.1).shape == (9, 3)  # k > n: all vote


def test_knn_runs_through_the_generic_evaluate_command(tmp_path):
    """A registered protocol with a run function: the generic command checks its outputs,
    writes predictions the table reads, and scores density from the features."""
    _probe_inputs(tmp_path)
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    config["knn"] = {"enabled": True, "k": 10}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    outs = [tmp_path / "knn" / f"{f}-{d}.csv" for f, d in [(0.1, 0), (0.1, 1), (0.1, 2), (1.0, 0)]]
    argv = ["evaluate", "--protocol", "knn", "--config", str(tmp_path / "config.yaml"), "--model", "m", "--seed", "0",
            "--task", "embed/density", "--manifest", str(tmp_path / "manifest.csv"), "--split",
            str(tmp_path / "split.csv"), "--input", str(tmp_path / "features.npz"), "--fraction", "0.1", "1.0"]
    main([*argv, "--out", *map(str, outs)])
    frames = [read_predictions(p) for p in outs]
    assert {f["protocol"].iloc[0] for f in frames} == {"knn"} and [f["draw"].iloc[0] for f in frames] == [0, 1, 2, 0]
    assert all(set(f["split"]) == {"val", "test"} for f in frames)
    table = build_table(outs, 100, 0, 0.95, None)
    assert table[(table.metric == "auc") & (table.fraction == "1")].value.iloc[0] > 0.8
    with pytest.raises(SystemExit):  # one output for four cells
        main([*argv, "--out", str(outs[0])])
    with pytest.raises(SystemExit):  # a protocol with a command of its own
        main([*argv[:2], "linear_probe", *argv[3:], "--out", *map(str, outs)])


def test_a_model_whose_pretraining_ended_at_chance_is_flagged_in_budget_and_table(tmp_path):
    import json

    from benchmark.tables import write_tables

    rng = np.random.default_rng(6)
    labels = rng.integers(0, 2, 100)
    patients = [f"p{i}" for i in range(100)]
    files, ledgers = [], []
    # soft: a soft-target loss whose floor (4.07) lies close to chance; 37 % of the way down
    for model, final, floor in (("learned", 3.2, None), ("stuck", 4.14, None), ("soft", 4.125, 4.066),
                                ("soft_stuck", 4.158, 4.066)):
        files.append(_predictions(tmp_path, np.clip(0.3 * labels + rng.random(100), 0, 1), labels, patients,
                                  f"{model}.csv", model))
        ledger = tmp_path / "checkpoints" / model / "seed0" / "ledger.json"
        ledger.parent.mkdir(parents=True)
        ledger.write_text(json.dumps({"method": "clip", "seed": 0, "samples_seen": 640, "image_text_term": "clip",
                                      "loss_terms": {"loss": {"final": final, "chance": None},
                                                     "clip": {"final": final, "chance": 4.158883,
                                                              "floor": floor}}}))
        ledgers.append(ledger)
    stats = {"n_boot": 50, "seed": 0, "ci": 0.95, "reference_model": None, "chance_margin": 0.02}
    write_tables(files, ledgers, tmp_path / "table.csv", tmp_path / "budget.csv", stats)
    budget = pd.read_csv(tmp_path / "budget.csv").set_index("model")
    assert not budget.loc["learned", "at_chance"] and budget.loc["stuck", "at_chance"]
    assert not budget.loc["soft", "at_chance"] and budget.loc["soft_stuck", "at_chance"]
    assert budget.loc["soft", "image_text_floor"] == pytest.approx(4.066) and budget.loc["stuck", "image_text_floor"] == 0
    assert budget.loc["stuck", "image_text_chance"] == pytest.approx(np.log(64), abs=1e-6)
    terms = pd.read_csv(tmp_path / "loss_terms.csv")
    assert len(terms) == 8 and terms[terms.image_text].term.tolist() == ["clip"] * 4
    table = pd.read_csv(tmp_path / "table.csv", keep_default_na=False)
    assert table[table.model == "stuck"].note.str.contains("pretraining ended at chance: clip seed 0 4.140").all()
    assert not table[table.model.isin(["learned", "soft"])].note.str.contains("chance").any()
    assert table[table.model == "soft_stuck"].note.str.contains("floor 4.066").all()
    assert "at chance" in (tmp_path / "table.md").read_text()


def test_an_external_checkpoint_is_marked_and_kept_out_of_the_primary_comparisons(tmp_path):
    import json

    from benchmark.tables import NOT_TRAINED_HERE, write_tables

    rng = np.random.default_rng(8)
    labels = rng.integers(0, 2, 100)
    patients = [f"p{i}" for i in range(100)]
    files, ledgers = [], []
    for model, ledger in (("ref", {"method": "clip", "seed": 0, "samples_seen": 640}),
                          ("released", {"method": "clip", "seed": 0, "trained_here": False, "samples_seen": None,
                                        "source": "open_clip_model.pt"})):
        files.append(_predictions(tmp_path, np.clip(0.3 * labels + rng.random(100), 0, 1), labels, patients,
                                  f"{model}.csv", model))
        path = tmp_path / "checkpoints" / model / "seed0" / "ledger.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(ledger))
        ledgers.append(path)
    stats = {"n_boot": 50, "seed": 0, "ci": 0.95, "reference_model": "ref", "chance_margin": 0.02,
             "primary": [{"protocol": "zeroshot", "metric": "auc"}]}
    write_tables(files, ledgers, tmp_path / "table.csv", tmp_path / "budget.csv", stats, controls=["released"])
    budget = pd.read_csv(tmp_path / "budget.csv").set_index("model")
    assert budget.loc["ref", "trained_here"] and not budget.loc["released", "trained_here"]
    table = pd.read_csv(tmp_path / "table.csv", keep_default_na=False)
    released = table[table.model == "released"]
    assert (released.note == NOT_TRAINED_HERE).all() and (released.delta_vs_ref != "").all()  # delta reported ...
    assert (released.p_adjusted == "").all()  # ... never a primary comparison
    markdown = (tmp_path / "table.md").read_text()
    assert "| released ext |" in markdown and f"ext: {NOT_TRAINED_HERE}" in markdown


def test_each_pretrained_model_is_compared_with_its_own_untrained_architecture(tmp_path):
    from benchmark.config import model_controls

    models = {"mama": {"method": "mama", "preset": "tiny"}, "clip": {"method": "clip", "preset": "tiny"},
              "clip_big": {"method": "clip", "preset": "paper", "weights": "w.pt"},
              "mama_untrained": {"method": "mama", "preset": "tiny", "pretrain": False},
              "random_init": {"method": "clip", "preset": "tiny", "pretrain": False},
              "clip_shuffled": {"method": "clip", "preset": "tiny", "captions": "shuffled"}}
    controls, control_of = model_controls(models)
    assert controls == ["clip_shuffled", "mama_untrained", "random_init"]
    assert control_of == {"mama": "mama_untrained", "clip": "random_init",  # no paper-preset control
                          "clip_shuffled": "random_init"}

    rng = np.random.default_rng(7)
    labels = rng.integers(0, 2, 200)
    patients = [f"p{i}" for i in range(200)]
    files = []
    for model, strength in (("trained", 0.6), ("untrained", 0.05)):
        for seed in (0, 1, 2):
            path = _predictions(tmp_path, np.clip(strength * labels + rng.random(200), 0, 1), labels, patients,
                                f"{model}{seed}.csv", model)
            pd.read_csv(path).assign(seed=seed).to_csv(path, index=False)
            files.append(path)
    table = build_table(files, 200, 0, 0.95, None, controls=["untrained"], control_of={"trained": "untrained"})
    auc = table[table.metric == "auc"].set_index("model")
    gain = auc.loc["trained"]
    assert gain.control == "untrained"
    assert gain.delta_vs_control == pytest.approx(auc.loc["trained", "value"] - auc.loc["untrained", "value"], abs=1e-5)
    assert gain.control_delta_ci_low > 0 and gain.control_p_value < 0.05
    assert pd.isna(auc.loc["untrained", "delta_vs_control"])
    md = to_markdown(table)
    assert "gain over the model's own untrained architecture" in md
    assert f"| trained | {gain.delta_vs_control:+.3f} [{gain.control_delta_ci_low:+.3f}" in md


def test_image_statistics_are_the_nine_named_intensity_statistics():
    from benchmark.evaluate.image_statistics import STATISTICS, intensity_statistics

    half = np.zeros((2, 10, 10), np.uint8)
    half[0, :, 5:] = 255  # half black, half white
    half[1] = 64  # uniform, a quarter of full scale
    stats = dict(zip(STATISTICS, intensity_statistics(half)[0]))
    assert stats["mean"] == pytest.approx(0.5) and stats["std"] == pytest.approx(0.5)
    assert (stats["p05"], stats["p95"]) == (0.0, 1.0) and stats["above_half"] == pytest.approx(0.5)
    uniform = dict(zip(STATISTICS, intensity_statistics(half)[1]))
    assert uniform["std"] == 0 and uniform["above_quarter"] == 1.0 and uniform["above_half"] == 0.0


def test_image_statistics_are_standardized_on_the_training_images_only():
    from benchmark.evaluate.image_statistics import standardized

    features = np.array([[1.0, 5.0], [3.0, 5.0], [100.0, -7.0]], np.float32)  # the last: a test image
    train = np.array([True, True, False])
    out = standardized(features, train)
    assert out[:2, 0] == pytest.approx([-1.0, 1.0])  # mean 2, sd 1 over the training rows
    assert out[2, 0] == pytest.approx(98.0)  # the test image does not move the scale
    assert out[:, 1] == pytest.approx([0.0, 0.0, -12.0])  # a constant statistic is centred, not divided by 0
