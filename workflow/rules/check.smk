# Validate each dataset folder (columns, files, counts, exclusions) before anything else.


rule check_data:
    input:
        lambda wc: raw_marker(wc.dataset),
    output:
        f"{R}/checks/{{dataset}}.json",
    params:
        settings=lambda wc: config_hash(config["data"][wc.dataset]),
    log:
        f"{R}/logs/check/{{dataset}}.log",
    conda:
        CONDA_ENV
    shell:
        "{BENCH} check-data --config {CONFIGFILE:q} --dataset {wildcards.dataset} --out {output:q} > {log:q} 2>&1"
