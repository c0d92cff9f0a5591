# DICOM -> PNG cache, manifest.csv and exclusions.csv.


rule preprocess:
    input:
        lambda wc: raw_marker(wc.dataset),
    output:
        manifest=f"{R}/cache/{{dataset}}/manifest.csv",
        exclusions=f"{R}/cache/{{dataset}}/exclusions.csv",
    threads: THREADS
    log:
        f"{R}/logs/preprocess/{{dataset}}.log",
    shell:
        "{BENCH} preprocess --config {CONFIGFILE} --dataset {wildcards.dataset} "
        "--out-dir {R}/cache/{wildcards.dataset} 2> {log}"
