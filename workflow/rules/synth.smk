# Synthetic EMBED / RSNA-format data (only for datasets with `synthetic` in the config).


rule synth:
    output:
        "{root}/SYNTHETIC.json",
    params:
        dataset=lambda wc: dataset_at(wc.root),
        settings=lambda wc: config_hash(config["data"][dataset_at(wc.root)]),
        generator=lambda wc: GENERATOR_VERSION[dataset_at(wc.root)],  # a new version reruns that dataset's data and what depends on it
    threads: THREADS
    log:
        "{root}/synth.log",
    conda:
        CONDA_ENV
    shell:
        "{BENCH} synth --config {CONFIGFILE:q} --dataset {params.dataset} --out {wildcards.root:q} "
        "--threads {threads} 2> {log:q}"
