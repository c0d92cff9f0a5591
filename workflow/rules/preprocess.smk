# DICOM -> PNG cache, manifest.csv and exclusions.csv.


rule preprocess:
    input:
        raw=lambda wc: raw_marker(wc.dataset),
        check=f"{R}/checks/{{dataset}}.json",
    output:
        manifest=f"{R}/cache/{{dataset}}/manifest.csv",
        exclusions=f"{R}/cache/{{dataset}}/exclusions.csv",
    params:
        settings=lambda wc: config_hash(config["data"][wc.dataset], config["preprocess"]),
    threads: THREADS
    log:
        f"{R}/logs/preprocess/{{dataset}}.log",
    shell:
        "{BENCH} preprocess --config {CONFIGFILE} --dataset {wildcards.dataset} "
        "--out-dir {R}/cache/{wildcards.dataset} --threads {threads} 2> {log}"
