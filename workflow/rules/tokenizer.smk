# BPE tokenizer for tiny text encoders, trained on the pretraining split's captions.
TOKENIZER_DATASET = config["tokenizer"]["dataset"]


rule tokenizer:
    input:
        manifest=manifest(TOKENIZER_DATASET),
        split=split_file(TOKENIZER_DATASET),
    output:
        f"{R}/tokenizer/tokenizer.json",
    params:
        settings=config_hash(config["tokenizer"]),
    log:
        f"{R}/logs/tokenizer.log",
    conda:
        CONDA_ENV
    shell:
        "{BENCH} tokenizer --config {CONFIGFILE:q} --manifest {input.manifest:q} --split {input.split:q} "
        "--out {output:q} 2> {log:q}"
