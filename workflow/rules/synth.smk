# Synthetic EMBED / RSNA-format data (only for datasets with `synthetic` in the config).


rule synth:
    output:
        "{root}/SYNTHETIC.json",
    params:
        dataset=lambda wc: next(d for d in config["data"] if config["data"][d]["root"] == wc.root),
        settings=lambda wc: config_hash(next(e for e in config["data"].values() if e["root"] == wc.root)),
        generator=GENERATOR_VERSION,  # a new generator version reruns the data and all that depends on it
    threads: THREADS
    log:
        "{root}/synth.log",
    conda:
        CONDA_ENV
    shell:
        "{BENCH} synth --config {CONFIGFILE:q} --dataset {params.dataset} --out {wildcards.root:q} "
        "--threads {threads} 2> {log:q}"
