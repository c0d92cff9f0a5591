# Patient-level train/val/test split with nested label fractions (and its sha256).


rule split:
    input:
        manifest=lambda wc: manifest(wc.dataset),
    output:
        split=f"{R}/splits/{{dataset}}.csv",
        sha=f"{R}/splits/{{dataset}}.sha256",
    params:
        settings=lambda wc: config_hash(without("split", "stratify", "balance_by", "validation", "ratios",
                                                "ratios_by_dataset"),
                                        config["split"]["stratify"].get(wc.dataset),
                                        *balance_by(wc.dataset),
                                        split_ratios(config["split"], wc.dataset)),
    log:
        f"{R}/logs/split/{{dataset}}.log",
    conda:
        CONDA_ENV
    shell:
        "{BENCH} split --config {CONFIGFILE:q} --dataset {wildcards.dataset} --manifest {input.manifest:q} "
        "--out {output.split:q} 2> {log:q}"
