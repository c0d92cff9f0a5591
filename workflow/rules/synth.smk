# Synthetic EMBED / RSNA-format data (only for datasets with `synthetic` in the config).


# what a dataset's data depend on: its config entry and the generator's version (a new
# version reruns that dataset's data and what depends on it)
SYNTH_SETTINGS = {d: config_hash(config["data"][d], GENERATOR_VERSION.get(d)) for d in config["data"]}
SYNTH_STAMPS = settings_stamps("synth", SYNTH_SETTINGS)


rule synth:
    input:
        settings=lambda wc: SYNTH_STAMPS[dataset_at(wc.root)],
    output:
        "{root}/SYNTHETIC.json",
    params:
        dataset=lambda wc: dataset_at(wc.root),
        settings=lambda wc: SYNTH_SETTINGS[dataset_at(wc.root)],
    threads: THREADS
    log:
        "{root}/synth.log",
    conda:
        CONDA_ENV
    shell:
        "{BENCH} synth --config {CONFIGFILE:q} --dataset {params.dataset} --out {wildcards.root:q} "
        "--threads {threads} 2> {log:q}"
