# Validate each dataset folder (columns, files, counts, exclusions) before anything else.


CHECK_SETTINGS = {d: config_hash(config["data"][d]) for d in DATASETS}
CHECK_STAMPS = settings_stamps("check_data", CHECK_SETTINGS)


rule check_data:
    input:
        lambda wc: raw_marker(wc.dataset),
        settings=lambda wc: CHECK_STAMPS[wc.dataset],
    output:
        f"{R}/checks/{{dataset}}.json",
    params:
        settings=lambda wc: CHECK_SETTINGS[wc.dataset],
    log:
        f"{R}/logs/check/{{dataset}}.log",
    conda:
        CONDA_ENV
    shell:
        "{BENCH} check-data --config {CONFIGFILE:q} --dataset {wildcards.dataset} --out {output:q} > {log:q} 2>&1"
