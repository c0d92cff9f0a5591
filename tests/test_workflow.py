"""The ci config's whole workflow, end to end, twice (the first with its jobs forked from the
warm-start server, the second with each job in its own process and in folders whose names have
a space and a non-ASCII character): the table is complete, and both runs write the same bytes;
then the figures target, the HTML report in headless Chromium, and what a new model schedules."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from benchmark.figures.names import FAMILIES, figure_stems

REPO = Path(__file__).resolve().parents[1]
MODELS = {"mama", "glam", "clip", "convirt", "mgca", "medclip", "mammoclip", "random_init", "clip_reimported"}
UNTRAINED = {"random_init"}  # pretrain: false in config/ci.yaml
EXTERNAL = {"clip_reimported": "clip"}  # external: true in config/ci.yaml, and the model it re-reads
TRAINED = MODELS - UNTRAINED - set(EXTERNAL)
BASELINE = "image_statistics"  # config/ci.yaml enables the hand-crafted baseline
REFERENCE = "mama"
TASKS = {("embed", "density"), ("embed", "birads"), ("rsna", "cancer"), ("vindr", "mass")}
BREAST_LEVEL = {("rsna", "cancer"), ("vindr", "mass")}  # binary, scored per breast too


def _run_ci_workflow(out: Path, warm_start: bool) -> None:
    config = yaml.safe_load((REPO / "config/ci.yaml").read_text())
    config["results"] = str(out)
    config["warm_start"] = warm_start
    for dataset in config["data"].values():
        dataset["root"] = str(out / "data" / Path(dataset["root"]).name)
    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(config))
    run = subprocess.run(["snakemake", f"{out}/table.csv", "--cores", "2", "--configfile", str(path)],
                         capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr[-3000:]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("workflow")
    _run_ci_workflow(base / "a", warm_start=True)
    # the second run's results and data folders have a space and a non-ASCII character:
    # every path in every rule is quoted; its jobs each run in their own process, where the
    # first run's fork from the warm-start server; the outputs are byte-identical
    _run_ci_workflow(base / "b résultats", warm_start=False)
    return base / "a", base / "b résultats"


@pytest.mark.slow
def test_table_has_every_cell_with_ordered_intervals(two_runs):
    table = pd.read_csv(two_runs[0] / "table.csv", dtype={"fraction": str})
    for dataset, task in TASKS:
        for model in MODELS:
            rows = table[(table.dataset == dataset) & (table.task == task) & (table.model == model)]
            cells = set(zip(rows.protocol, rows.fraction.fillna("")))
            expected = {("zeroshot", "")} | {(protocol, f) for protocol in ("linear_probe", "linear_probe_fixed_c", "knn")
                                              for f in ("0.01", "0.1", "1")}  # knn: the generic rule
            expected |= {("zeroshot_prefixed", "")} if dataset == "embed" else set()  # MaMA's metadata prompts
            if model in UNTRAINED:  # an untrained control has no zero-shot rows (a random projection's sign)
                expected -= {("zeroshot", ""), ("zeroshot_prefixed", "")}
            expected |= {("finetune", "1")} if task == "density" else set()  # ci.yaml fine-tunes density only
            assert cells == expected, (dataset, task, model)
            metrics = set(rows.metric)
            assert {"bacc", "auc"} <= metrics and (("auc_breast" in metrics) == ((dataset, task) in BREAST_LEVEL))
            # binary, per breast: thresholds from validation, and the challenge's pF1
            per_breast = {"sens_breast", "spec_breast", "sens_spec90_breast", "pf1_breast"}
            assert (per_breast <= metrics) == ((dataset, task) in BREAST_LEVEL)
            small = rows[(rows.protocol == "linear_probe") & (rows.fraction != "1")]
            assert (small.seeds == "0/0 0/1 0/2").all() and small.seed_std.notna().all()  # three patient draws
    assert (table.ci_low <= table.value + 1e-9).all() and (table.value <= table.ci_high + 1e-9).all()
    assert table.value.between(0, 1).all()
    baseline = table[table.model == BASELINE]  # the hand-crafted baseline: probe rows only, one seed
    assert set(zip(baseline.protocol, baseline.fraction)) == {(p, f) for p in ("linear_probe", "linear_probe_fixed_c")
                                                              for f in ("0.01", "0.1", "1")}
    assert set(baseline[baseline.fraction == "1"].seeds) == {"0"}
    assert baseline.p_adjusted.isna().all()  # a yardstick, not in the primary comparisons
    others = table[table.model != REFERENCE]
    assert others.delta_vs_ref.notna().all() and table[table.model == REFERENCE].delta_vs_ref.isna().all()


@pytest.mark.slow
def test_an_external_checkpoint_is_evaluated_into_the_table_and_marked(two_runs):
    from benchmark.tables import NOT_TRAINED_HERE

    table = pd.read_csv(two_runs[0] / "table.csv", dtype={"fraction": str})
    budget = pd.read_csv(two_runs[0] / "budget.csv").set_index("model")
    key = ["dataset", "task", "protocol", "fraction", "metric"]
    for external, source in EXTERNAL.items():
        rows, original = (table[table.model == m].set_index(key).sort_index() for m in (external, source))
        assert len(rows) == len(original) > 50
        # the same weights: every evaluation gives what the model it re-reads gives
        assert (rows[["value", "ci_low", "ci_high"]] - original[["value", "ci_low", "ci_high"]]).abs().max().max() < 1e-9
        assert (rows.note == NOT_TRAINED_HERE).all() and rows.p_adjusted.isna().all()
        assert not budget.loc[external, "trained_here"] and budget.loc[source, "trained_here"]
        assert pd.isna(budget.loc[external, "samples_seen"])
    assert " ext |" in (two_runs[0] / "table.md").read_text()


@pytest.mark.slow
def test_two_runs_give_identical_splits_and_table(two_runs):
    a, b = two_runs
    for name in ["splits/embed.csv", "splits/rsna.csv", "splits/vindr.csv", "table.csv", "table.md", "table.tex"]:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


# What may differ between a warm and a cold run: the ledgers' timings and memory (and the
# budget table made from them), the config's warm_start, the logs, and the settings stamps
# (hashes of settings that hold each run's data folder).
NOT_COMPARED = {"ledger.json", "budget.csv", "config.effective.yaml"}


def _outputs(root: Path) -> dict[Path, bytes]:
    """Every output but the logs and timings, with the run's own folder name taken out."""
    names = [str(root).encode(), json.dumps(str(root))[1:-1].encode()]  # as written, and JSON-escaped
    outputs = {}
    for path in sorted(root.rglob("*")):
        top = path.relative_to(root).parts[0]
        if path.is_file() and top not in ("logs", "settings") and path.suffix != ".log" and path.name not in NOT_COMPARED:
            data = path.read_bytes()
            for name in names:
                data = data.replace(name, b"<results>")
            outputs[path.relative_to(root)] = data
    return outputs


@pytest.mark.slow
def test_jobs_forked_from_the_warm_start_server_write_what_their_own_processes_write(two_runs):
    warm, cold = two_runs
    forked = (warm / "logs/warm_start.log").read_text()
    for command in ("benchmark pretrain", "benchmark features", "benchmark probe", "benchmark finetune",
                    "benchmark evaluate --protocol knn", "benchmark table"):
        assert command in forked, command
    assert "refused" not in forked and not (cold / "logs/warm_start.log").exists()
    warm_outputs, cold_outputs = _outputs(warm), _outputs(cold)
    assert len(warm_outputs) > 300 and sorted(warm_outputs) == sorted(cold_outputs)
    different = [str(path) for path in warm_outputs if warm_outputs[path] != cold_outputs[path]]
    assert not different, different[:10]


@pytest.mark.slow
def test_budget_ledger_and_exclusions_are_written(two_runs):
    budget = pd.read_csv(two_runs[0] / "budget.csv")
    assert set(budget.model) == MODELS
    trained = budget.set_index("model")
    assert trained.loc["random_init", "samples_seen"] == 0
    for model in TRAINED:  # the same budget for every method, within one batch
        assert 512 <= trained.loc[model, "samples_seen"] < 512 + trained.loc[model, "batch_size"], model
        assert trained.loc[model, "flops"] > 0, model
    for dataset in ("embed", "rsna", "vindr"):
        manifest = pd.read_csv(two_runs[0] / f"cache/{dataset}/manifest.csv")
        assert len(manifest) > 0 and (two_runs[0] / f"cache/{dataset}/exclusions.csv").exists()


# --- figures and report -----------------------------------------------------------------
FIGURE_RULES = {f"figure_{family}" for family in FAMILIES} | {"figures"}


def _snakemake(*args, cwd=REPO):
    run = subprocess.run(["snakemake", *args], capture_output=True, text=True, cwd=cwd)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    return run.stdout + run.stderr


def _jobs(log: str) -> list[tuple[str, dict]]:
    """(rule, wildcards) of every job a Snakemake log lists (a dry run or a real one)."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", log):
        match = re.match(r"(?:local)?rule (\w+):", block)
        if match:
            found = re.search(r"^\s+wildcards: (.*)$", block, flags=re.M)
            wildcards = dict(kv.split("=", 1) for kv in found.group(1).split(", ")) if found else {}
            jobs.append((match.group(1), wildcards))
    return jobs


def _figure_files(out: Path) -> list[Path]:
    stems = [stem for family in FAMILIES for stem in figure_stems(family, sorted(f"{d}/{t}" for d, t in TASKS))]
    return [out / "figures" / f"{stem}.{ext}" for stem in stems for ext in ("png", "pdf")]


@pytest.fixture(scope="module")
def figures_run(two_runs):
    out = two_runs[0]
    config = out.parent / f"{out.name}.yaml"
    log = _snakemake("figures", "--cores", "2", "--configfile", str(config))
    return out, config, log


@pytest.mark.slow
def test_figures_target_writes_every_figure_at_paper_width(figures_run):
    from PIL import Image

    out, _, log = figures_run
    assert not {rule for rule, _ in _jobs(log)} & {"pretrain", "table"}  # the table run made those
    for path in _figure_files(out):
        assert path.exists() and path.stat().st_size > 1000, path
        if path.suffix == ".png":
            width_in = Image.open(path).size[0] / 300
            assert width_in <= 7.5, (path.name, width_in)  # a full page width, legends included
        else:
            assert path.read_bytes()[:5] == b"%PDF-"


@pytest.mark.slow
def test_deleted_figures_are_redrawn_without_training_or_evaluating(figures_run):
    out, config, _ = figures_run
    shutil.rmtree(out / "figures")
    log = _snakemake("figures", "--cores", "2", "--configfile", str(config))
    ran = {rule for rule, _ in _jobs(log)}
    assert ran and ran <= FIGURE_RULES, ran
    assert all(path.exists() for path in _figure_files(out))


@pytest.mark.slow
def test_a_new_model_schedules_only_its_own_jobs_and_the_aggregations(figures_run):
    out, config_path, _ = figures_run
    config = yaml.safe_load(config_path.read_text())
    config["models"]["clip2"] = {"method": "clip", "preset": "tiny"}
    extended = config_path.with_name("with-clip2.yaml")
    extended.write_text(yaml.safe_dump(config))
    jobs = _jobs(_snakemake("figures", "--dry-run", "--configfile", str(extended)))
    others = [(rule, wc) for rule, wc in jobs if wc.get("model") not in (None, "clip2")]
    assert not others, others
    own = sorted(rule for rule, wc in jobs if wc.get("model") == "clip2")
    assert own == sorted(["pretrain", "features_embed", "features_rsna", "features_vindr", "finetune"]
                         + ["linear_probe", "evaluate_knn"] * len(TASKS) + ["tsne"] * 3), own
    aggregations = {rule for rule, wc in jobs if "model" not in wc}
    assert aggregations == FIGURE_RULES | {"table", "subgroups"}, aggregations


@pytest.mark.slow
def test_report_shows_every_figure_and_the_table_in_headless_chromium(figures_run):
    from benchmark.report_check import check_report, find_browser

    if find_browser() is None:
        pytest.skip("chromium and chromedriver are not installed (.ci/run installs them)")
    out, config, _ = figures_run
    _snakemake("--report", str(out / "report.html"), "--configfile", str(config))
    check = check_report(out / "report.html", out / "report-check")
    assert not check.failed and not check.console_errors, (check.failed, check.console_errors)
    figures = {p.stem for p in _figure_files(out)}
    assert figures <= set(check.viewed) and check.viewed.get("table (wide layout)") == "html", check.viewed
    assert all(check.viewed[name] == "image" for name in figures)
    assert len(check.screenshots) == len(figures) + 2 and all(p.stat().st_size > 5000 for p in check.screenshots)


# --- config edits rerun exactly what they change ------------------------------------------
# Figures drawn from the table (and the budget it writes), and the aggregation rule.
TABLE_FIGURES = {"figure_label_efficiency", "figure_bars", "figure_roc", "figure_compute_ledger", "figures"}
SUBGROUP_RULES = {"subgroups", "figure_subgroups"}  # they read the probe's predictions and the bootstrap settings


def _dry_run_after_edit(config_path: Path, edit) -> list[tuple[str, dict]]:
    config = yaml.safe_load(config_path.read_text())
    edit(config)
    edited = config_path.with_name("edited.yaml")
    edited.write_text(yaml.safe_dump(config))
    return _jobs(_snakemake("figures", "--dry-run", "--configfile", str(edited)))


def _written(paths) -> dict[Path, tuple[bytes, int]]:
    return {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in paths}


@pytest.mark.slow
def test_an_unchanged_config_reruns_nothing_and_a_dry_run_writes_nothing(figures_run):
    out, config, _ = figures_run
    watched = [out / "config.effective.yaml", *sorted((out / "settings").glob("*.txt"))]
    before = _written(watched)
    assert len(before) > 20  # the settings stamps: workflow/rules/common.smk
    jobs = _jobs(_snakemake("figures", "--dry-run", "--configfile", str(config)))
    assert {rule for rule, _ in jobs} <= {"figures"}, jobs
    _dry_run_after_edit(config, lambda c: c["stats"].update(n_boot=123))
    assert _written(watched) == before  # the parse wrote nothing


@pytest.mark.slow
def test_a_new_budget_reruns_every_pretraining_and_what_depends_on_it(figures_run):
    _, config, _ = figures_run
    jobs = _dry_run_after_edit(config, lambda c: c["pretrain"].update(samples_seen=2 * c["pretrain"]["samples_seen"]))
    assert sorted(wc["model"] for rule, wc in jobs if rule == "pretrain") == sorted(TRAINED)
    # the untrained control stays; the external model re-reads CLIP's new checkpoint
    assert {wc["model"] for _, wc in jobs if "model" in wc} == TRAINED | set(EXTERNAL)
    assert {rule for rule, _ in jobs} == {"pretrain", "import_checkpoint", "features_embed", "features_rsna", "features_vindr",
                                          "linear_probe", "finetune", "evaluate_knn", "tsne", "table",
                                          "subgroups"} | FIGURE_RULES


@pytest.mark.slow
def test_a_seed_of_a_models_own_schedules_only_that_seeds_jobs_and_the_aggregations(figures_run):
    """models.<name>.seeds: the untrained control gains seed 1; its seed 0 stays as it is."""
    _, config, _ = figures_run
    jobs = _dry_run_after_edit(config, lambda c: c["models"]["random_init"].update(seeds=[0, 1]))
    own = sorted(rule for rule, wc in jobs if "model" in wc)
    assert own == sorted(["pretrain", "features_embed", "features_rsna", "features_vindr", "finetune"]
                         + ["linear_probe", "evaluate_knn"] * len(TASKS)), own  # no t-SNE: the figures show seed 0
    assert {(wc["model"], wc["seed"]) for _, wc in jobs if "model" in wc} == {("random_init", "1")}
    aggregations = {rule for rule, wc in jobs if "model" not in wc}
    assert {"table", "subgroups"} <= aggregations <= FIGURE_RULES | {"table", "subgroups"}, aggregations


@pytest.mark.slow
def test_a_new_probe_grid_reruns_only_probes_the_table_and_its_figures(figures_run):
    _, config, _ = figures_run
    jobs = _dry_run_after_edit(config, lambda c: c["linear_probe"].update(C=[0.1, 1.0]))
    assert {rule for rule, _ in jobs} == {"linear_probe", "table"} | TABLE_FIGURES | SUBGROUP_RULES
    assert sum(rule == "linear_probe" for rule, _ in jobs) == len(TASKS) * (len(MODELS) + 1)  # + the baseline


@pytest.mark.slow
def test_new_bootstrap_settings_rerun_only_the_table_and_its_figures(figures_run):
    _, config, _ = figures_run
    jobs = _dry_run_after_edit(config, lambda c: c["stats"].update(n_boot=c["stats"]["n_boot"] + 1))
    assert {rule for rule, _ in jobs} == {"table"} | TABLE_FIGURES | SUBGROUP_RULES


@pytest.mark.slow
def test_new_subgroup_settings_rerun_only_the_subgroups_and_their_figure(figures_run):
    _, config, _ = figures_run
    jobs = _dry_run_after_edit(config, lambda c: c["subgroups"].update(min_patients=c["subgroups"]["min_patients"] + 1))
    assert {rule for rule, _ in jobs} == SUBGROUP_RULES | {"figures"}


@pytest.mark.slow
def test_a_copied_results_folder_reruns_what_an_edit_changes_without_snakemakes_record(two_runs, tmp_path):
    """Snakemake keeps the params it compares in .snakemake/metadata, under its working
    folder: a copy of a results folder, run from a new working folder, has no such record.
    The settings stamps (workflow/rules/common.smk) rerun an edited setting's jobs by
    modification time instead, and nothing else; on the old code the edit reran nothing."""
    source = two_runs[0]
    copy = tmp_path / "copy"
    shutil.copytree(source, copy)  # modification times kept; the data stays where the config says
    config = yaml.safe_load((source.parent / f"{source.name}.yaml").read_text())
    config["results"] = str(copy)
    (tmp_path / "config").symlink_to(REPO / "config")  # the config's relative paths (prompts) unchanged
    path = tmp_path / "copy.yaml"
    path.write_text(yaml.safe_dump(config))
    workdir = ["--directory", str(tmp_path), "--snakefile", str(REPO / "workflow/Snakefile")]
    assert not (tmp_path / ".snakemake").exists()  # no record of any output
    target = f"{copy}/table.csv"
    first = _jobs(_snakemake(target, "--cores", "2", "--configfile", str(path), *workdir))
    # only the external model reruns: its source is {results}/checkpoints/clip, a new path in the copy
    assert {wc.get("model") for rule, wc in first if rule != "table"} == set(EXTERNAL), first
    config["stats"]["n_boot"] += 1
    path.write_text(yaml.safe_dump(config))
    ran = _jobs(_snakemake(target, "--cores", "2", "--configfile", str(path), *workdir))
    assert [rule for rule, _ in ran] == ["table"], ran


@pytest.mark.slow
def test_subgroups_have_every_model_attribute_and_a_too_small_group(figures_run):
    out, _, _ = figures_run
    rows = pd.read_csv(out / "subgroups.csv", dtype={"fraction": str, "subgroup": str})
    assert set(rows.model) == MODELS | {BASELINE} and set(rows.protocol) == {"linear_probe", "zeroshot", "finetune"}
    assert set(zip(rows.dataset, rows.attribute)) == {(d, a) for d in ("embed",) for a in
                                                      ("race", "ethnicity", "age_band", "manufacturer")} | {
        ("rsna", a) for a in ("site_id", "machine_id", "age_band")} | {
        ("vindr", a) for a in ("manufacturer", "age_band")}
    measured = rows[rows.value.notna()]
    assert len(measured) and (measured.ci_low <= measured.value + 1e-9).all()
    assert (measured.method_gap_ci_low <= measured.method_gap_ci_high).all()
    small = rows[rows.note.fillna("").str.startswith("too small")]
    assert len(small) and small.value.isna().all() and small.gap.isna().all()


@pytest.mark.slow
def test_the_disk_check_estimate_bounds_what_the_run_wrote(two_runs):
    """The pre-flight estimate (benchmark/disk_space.py, written before the first job) is at
    least what the whole run then wrote, and not so loose that it refuses runs that fit."""
    record = json.loads((two_runs[0] / "logs" / "disk-check.jsonl").read_text().splitlines()[0])  # the first run's
    written = sum(p.stat().st_size for p in two_runs[0].rglob("*") if p.is_file())
    assert written <= record["total_bytes"] <= 4 * written, (record, written)


@pytest.mark.slow
def test_a_balance_column_for_one_dataset_resplits_only_that_dataset(figures_run):
    _, config, _ = figures_run
    jobs = _dry_run_after_edit(config, lambda c: c["split"].update(balance_by={"rsna": "site_id"}))
    assert [wc for rule, wc in jobs if rule == "split"] == [{"dataset": "rsna"}]
    ran = {rule for rule, _ in jobs}
    assert not ran & {"pretrain", "tokenizer", "text_tower", "features_embed", "features_vindr"}, ran
    assert {"features_rsna", "linear_probe", "table"} <= ran
    assert not any(wc.get("dataset") in ("embed", "vindr") for _, wc in jobs)
