# BPE tokenizer for tiny text encoders, trained on the pretraining split's captions.
from benchmark.data.tokenizer import SPECIAL_TOKENS

TOKENIZER_DATASET = config["tokenizer"]["dataset"]
TOKENIZER_SETTINGS = config_hash(config["tokenizer"], SPECIAL_TOKENS)  # new special tokens retrain it


rule tokenizer:
    input:
        manifest=manifest(TOKENIZER_DATASET),
        split=split_file(TOKENIZER_DATASET),
        settings=settings_stamp("tokenizer", TOKENIZER_SETTINGS),
    output:
        f"{R}/tokenizer/tokenizer.json",
    params:
        settings=TOKENIZER_SETTINGS,
    log:
        f"{R}/logs/tokenizer.log",
    conda:
        CONDA_ENV
    shell:
        "{BENCH} tokenizer --config {CONFIGFILE:q} --manifest {input.manifest:q} --split {input.split:q} "
        "--out {output:q} 2> {log:q}"


# The tiny text towers (models/text_towers.py) the tiny presets start from, each pretrained
# once with its language-model objective on the same training captions, shared by every
# method whose preset names it. A tower's hash holds its architecture and size.
TOWER_SETTINGS = {tower: config_hash(config["text_towers"], spec) for tower, spec in TOWERS.items()}
TOWER_STAMPS = settings_stamps("text_tower", TOWER_SETTINGS)


rule text_tower:
    input:
        manifest=manifest(TOKENIZER_DATASET),
        split=split_file(TOKENIZER_DATASET),
        tokenizer=f"{R}/tokenizer/tokenizer.json",
        settings=lambda wc: TOWER_STAMPS[wc.tower],
    output:
        f"{R}/text_towers/{{tower}}/model.safetensors",
    params:
        settings=lambda wc: TOWER_SETTINGS[wc.tower],
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
