# Patient-level train/val/test split with nested label fractions (and its sha256).


SPLIT_SETTINGS = {
    d: config_hash(without("split", "stratify", "balance_by", "validation", "ratios", "ratios_by_dataset"),
                   config["split"]["stratify"].get(d), *balance_by(d), split_ratios(config["split"], d))
    for d in DATASETS
}
SPLIT_STAMPS = settings_stamps("split", SPLIT_SETTINGS)


rule split:
    input:
        manifest=lambda wc: manifest(wc.dataset),
        settings=lambda wc: SPLIT_STAMPS[wc.dataset],
    output:
        split=f"{R}/splits/{{dataset}}.csv",
        sha=f"{R}/splits/{{dataset}}.sha256",
    params:
        settings=lambda wc: SPLIT_SETTINGS[wc.dataset],
    log:
        f"{R}/logs/split/{{dataset}}.log",
    conda:
        CONDA_ENV
    shell:
        "{BENCH} split --config {CONFIGFILE:q} --dataset {wildcards.dataset} --manifest {input.manifest:q} "
        "--out {output.split:q} 2> {log:q}"
