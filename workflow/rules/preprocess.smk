# DICOM -> PNG cache, manifest.csv and exclusions.csv.


PREPROCESS_SETTINGS = {d: config_hash(config["data"][d], config["preprocess"], CACHE_FORMAT) for d in DATASETS}
PREPROCESS_STAMPS = settings_stamps("preprocess", PREPROCESS_SETTINGS)


rule preprocess:
    input:
        raw=lambda wc: raw_marker(wc.dataset),
        check=f"{R}/checks/{{dataset}}.json",
        settings=lambda wc: PREPROCESS_STAMPS[wc.dataset],
    output:
        manifest=f"{R}/cache/{{dataset}}/manifest.csv",
        exclusions=f"{R}/cache/{{dataset}}/exclusions.csv",
    params:
        out_dir=lambda wc: f"{R}/cache/{wc.dataset}",
        settings=lambda wc: PREPROCESS_SETTINGS[wc.dataset],
    threads: THREADS
    log:
        f"{R}/logs/preprocess/{{dataset}}.log",
    conda:
        CONDA_ENV
    shell:
        "{BENCH} preprocess --config {CONFIGFILE:q} --dataset {wildcards.dataset} "
        "--out-dir {params.out_dir:q} --threads {threads} 2> {log:q}"


# GLAM's MLO views aligned to the CC orientation along the pectoral line
# (benchmark/data/mlo_alignment.py); only pretraining jobs of models that ask for them need it.
rule align_mlo:
    input:
        manifest=f"{R}/cache/{{dataset}}/manifest.csv",
    output:
        f"{R}/cache/{{dataset}}/mlo_to_cc.csv",
    threads: 1
    log:
        f"{R}/logs/align_mlo/{{dataset}}.log",
    conda:
        CONDA_ENV
    shell:
        "{BENCH} align-mlo --config {CONFIGFILE:q} --manifest {input.manifest:q} --out {output:q} 2> {log:q}"
