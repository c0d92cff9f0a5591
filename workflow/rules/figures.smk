# The paper's figures (`snakemake --cores all figures`), drawn from saved predictions,
# embeddings, alignment maps and ledgers only: every rule here reads files and draws, so
# deleting results/figures and rerunning the target trains and evaluates nothing. The
# t-SNE coordinates are per (model, dataset); everything else is an aggregation.
from benchmark.figures.names import figure_stems, task_datasets

FIG = f"{R}/figures"
TASK_DATASETS = task_datasets(TASKS)
FIGURE_SEED = SEEDS[0]
# what every figure depends on besides its input files
FIGURE_SETTINGS = config_hash(config["figures"], config["stats"].get("reference_model"), MODELS, TASKS)  # t-SNE and alignment maps show the first pretraining seed
FIGURE_STAMP = settings_stamp("figures", FIGURE_SETTINGS)
TSNE_SETTINGS = config_hash(config["figures"]["tsne_max_points"], TASKS)
FAMILY_TITLES = {
    "label_efficiency": "Label efficiency",
    "bars": "Every protocol",
    "roc": "ROC curves",
    "tsne": "t-SNE of embeddings",
    # the maps come from the pretraining dataset's reports, read only when a model trains here
    **({"alignment": "Sentence-to-patch alignment"} if PRETRAIN_DATASET in DATASETS else {}),
    "compute_ledger": "Compute ledger",
    **({"subgroups": "Subgroup gaps"} if config["subgroups"]["enabled"] else {}),
}


localrules:
    figures,
    figure_label_efficiency,
    figure_bars,
    figure_roc,
    figure_tsne,
    figure_alignment,
    figure_compute_ledger,
    figure_subgroups,


def figure_files(family, report_png=False):
    """PNG and PDF per figure of a family; the PNGs go into the HTML report."""
    files = []
    for stem in figure_stems(family, TASKS):
        png = f"{FIG}/{stem}.png"
        if report_png:
            png = report(png, caption=f"../report/{family}.rst", category="Figures",
                         subcategory=FAMILY_TITLES.get(family, family), labels={"figure": stem})
        files += [png, f"{FIG}/{stem}.pdf"]
    return files


def tsne_file(model, dataset):
    return f"{R}/embeddings/{model}/seed{FIGURE_SEED}/tsne_{dataset}.csv"


rule tsne:
    input:
        features=f"{R}/features/{{model}}/seed{{seed}}/{{dataset}}.npz",
        manifest=lambda wc: manifest(wc.dataset),
        split=lambda wc: split_file(wc.dataset),
        settings=settings_stamp("tsne", TSNE_SETTINGS),
    output:
        f"{R}/embeddings/{{model}}/seed{{seed}}/tsne_{{dataset}}.csv",
    params:
        settings=TSNE_SETTINGS,
    threads: 1
    log:
        f"{R}/logs/tsne/{{model}}-seed{{seed}}-{{dataset}}.log",
    conda:
        CONDA_ENV
    shell:
        "{BENCH} tsne --config {CONFIGFILE:q} --model {wildcards.model} --seed {wildcards.seed} "
        "--dataset {wildcards.dataset} --features {input.features:q} --manifest {input.manifest:q} "
        "--split {input.split:q} --out {output:q} 2> {log:q}"


rule figure_label_efficiency:
    input:
        table=f"{R}/table.csv",
        settings=FIGURE_STAMP,
    output:
        figure_files("label_efficiency", report_png=True),
    params:
        settings=FIGURE_SETTINGS,
    log:
        f"{R}/logs/figures/label_efficiency.log",
    conda:
        CONDA_ENV
    shell:
        "{BENCH} figures label_efficiency --config {CONFIGFILE:q} --out-dir {FIG:q} --table {input.table:q} 2> {log:q}"


rule figure_bars:
    input:
        table=f"{R}/table.csv",
        settings=FIGURE_STAMP,
    output:
        figure_files("bars", report_png=True),
    params:
        settings=FIGURE_SETTINGS,
    log:
        f"{R}/logs/figures/bars.log",
    conda:
        CONDA_ENV
    shell:
        "{BENCH} figures bars --config {CONFIGFILE:q} --out-dir {FIG:q} --table {input.table:q} 2> {log:q}"


rule figure_roc:
    input:
        table=f"{R}/table.csv",
        predictions=prediction_files(fractions=[1.0]),  # zero-shot and the full label fraction
        settings=FIGURE_STAMP,
    output:
        figure_files("roc", report_png=True),
    params:
        settings=FIGURE_SETTINGS,
    log:
        f"{R}/logs/figures/roc.log",
    conda:
        CONDA_ENV
    shell:
        "{BENCH} figures roc --config {CONFIGFILE:q} --out-dir {FIG:q} --table {input.table:q} "
        "--predictions {input.predictions:q} 2> {log:q}"


rule figure_tsne:
    input:
        **{f"{m}:{d}": tsne_file(m, d) for m in MODELS for d in TASK_DATASETS},
        settings=FIGURE_STAMP,
    output:
        figure_files("tsne", report_png=True),
    params:
        settings=FIGURE_SETTINGS,
        inputs=lambda wc, input: " ".join(shlex.quote(f"{key}={path}") for key, path in input.items() if key != "settings"),
    log:
        f"{R}/logs/figures/tsne.log",
    conda:
        CONDA_ENV
    shell:
        "{BENCH} figures tsne --config {CONFIGFILE:q} --out-dir {FIG:q} --inputs {params.inputs} 2> {log:q}"


rule figure_alignment:
    input:
        **{m: alignment_file(m, FIGURE_SEED) for m in MODELS},
        settings=FIGURE_STAMP,
    output:
        figure_files("alignment", report_png=True),
    params:
        settings=FIGURE_SETTINGS,
        inputs=lambda wc, input: " ".join(shlex.quote(f"{key}={path}") for key, path in input.items() if key != "settings"),
    log:
        f"{R}/logs/figures/alignment.log",
    conda:
        CONDA_ENV
    shell:
        "{BENCH} figures alignment --config {CONFIGFILE:q} --out-dir {FIG:q} --inputs {params.inputs} 2> {log:q}"


rule figure_compute_ledger:
    input:
        budget=f"{R}/budget.csv",
        settings=FIGURE_STAMP,
    output:
        figure_files("compute_ledger", report_png=True),
    params:
        settings=FIGURE_SETTINGS,
    log:
        f"{R}/logs/figures/compute_ledger.log",
    conda:
        CONDA_ENV
    shell:
        "{BENCH} figures compute_ledger --config {CONFIGFILE:q} --out-dir {FIG:q} --budget {input.budget:q} 2> {log:q}"


rule figure_subgroups:
    input:
        subgroups=f"{R}/subgroups.csv",
        settings=FIGURE_STAMP,
    output:
        figure_files("subgroups", report_png=True),
    params:
        settings=FIGURE_SETTINGS,
    log:
        f"{R}/logs/figures/subgroups.log",
    conda:
        CONDA_ENV
    shell:
        "{BENCH} figures subgroups --config {CONFIGFILE:q} --out-dir {FIG:q} --subgroups {input.subgroups:q} 2> {log:q}"


rule figures:
    input:
        [f for family in FAMILY_TITLES for f in figure_files(family)],
