# Patient-level train/val/test split with nested label fractions (and its sha256).


rule split:
    input:
        manifest=lambda wc: manifest(wc.dataset),
    output:
        split=f"{R}/splits/{{dataset}}.csv",
        sha=f"{R}/splits/{{dataset}}.sha256",
    log:
        f"{R}/logs/split/{{dataset}}.log",
    shell:
        "{BENCH} split --config {CONFIGFILE} --dataset {wildcards.dataset} --manifest {input.manifest} "
        "--out {output.split} 2> {log}"
