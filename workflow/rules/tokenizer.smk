# BPE tokenizer for tiny text encoders, trained on the pretraining split's captions.
from benchmark.data.tokenizer import SPECIAL_TOKENS

TOKENIZER_DATASET = config["tokenizer"]["dataset"]


rule tokenizer:
    input:
        manifest=manifest(TOKENIZER_DATASET),
        split=split_file(TOKENIZER_DATASET),
    output:
        f"{R}/tokenizer/tokenizer.json",
    params:
        settings=config_hash(config["tokenizer"], SPECIAL_TOKENS),  # new special tokens retrain it
    log:
        f"{R}/logs/tokenizer.log",
    conda:
        CONDA_ENV
    shell:
        "{BENCH} tokenizer --config {CONFIGFILE:q} --manifest {input.manifest:q} --split {input.split:q} "
        "--out {output:q} 2> {log:q}"


# The tiny text towers (models/text_towers.py) the tiny presets start from, each pretrained
# once with its language-model objective on the same training captions, shared by every
# method whose preset names it.
rule text_tower:
    input:
        manifest=manifest(TOKENIZER_DATASET),
        split=split_file(TOKENIZER_DATASET),
        tokenizer=f"{R}/tokenizer/tokenizer.json",
    output:
        f"{R}/text_towers/{{tower}}/model.safetensors",
    params:
        settings=lambda wc: config_hash(config["text_towers"], tower_spec(wc.tower)),
        out=lambda wc: tower_dir(wc.tower),
    threads: 1
    log:
        f"{R}/logs/text_towers/{{tower}}.log",
    conda:
        CONDA_ENV
    shell:
        "{BENCH} text-tower --config {CONFIGFILE:q} --tower {wildcards.tower} --manifest {input.manifest:q} "
        "--split {input.split:q} --tokenizer {input.tokenizer:q} --out-dir {params.out:q} --threads {threads} "
        "2> {log:q}"
