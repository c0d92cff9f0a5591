# One encoder pass per (model, seed, dataset): backbone features for the probes, joint
# embeddings, and the zero-shot predictions of the dataset's tasks (the model is loaded
# once). Then one probe job per (task, model, seed) writes every label fraction.


def dataset_tasks(dataset):
    return [t.split("/")[1] for t in TASKS if t.split("/")[0] == dataset]


def zeroshot_args(dataset):
    """The features command's ``--zeroshot PROTOCOL TASK OUT`` options for a dataset's tasks."""

    def args(wildcards):
        return " ".join(
            f"--zeroshot {protocol} {dataset}/{task} {shlex.quote(path)}"
            for task in dataset_tasks(dataset)
            for protocol, path in zeroshot_cells(f"{dataset}/{task}", wildcards.model, wildcards.seed)
        )

    return args


def alignment_file(model, seed):
    """Sentence-to-patch maps of a few test images (the pretraining dataset has the reports)."""
    return f"{R}/features/{model}/seed{seed}/alignment.npz"


FEATURES_SETTINGS = config_hash(config["zeroshot"], config["figures"]["alignment_examples"])
IMAGE_STATISTICS_SETTINGS = config_hash(config["image_statistics"])
PROBE_SETTINGS = config_hash(config["linear_probe"], config["split"]["draws"], config["split"]["validation"])
FINETUNE_SETTINGS = config_hash(without("finetune", "threads"), config["split"]["draws"], config["split"]["validation"])


# One features rule per dataset: its zero-shot outputs are that dataset's tasks; the
# pretraining dataset's also saves the alignment maps.
for _dataset in DATASETS:
    _alignment = {"alignment": alignment_file("{model}", "{seed}")} if _dataset == PRETRAIN_DATASET else {}

    rule:
        name:
            f"features_{_dataset}"
        input:
            weights=f"{R}/checkpoints/{{model}}/seed{{seed}}/model.safetensors",
            manifest=manifest(_dataset),
            split=split_file(_dataset),
            prompts=config["zeroshot"]["prompts"],
            settings=settings_stamp("features", FEATURES_SETTINGS),
        output:
            features=f"{R}/features/{{model}}/seed{{seed}}/{_dataset}.npz",
            zeroshot=[
                path
                for task in dataset_tasks(_dataset)
                for path in zeroshot_files(f"{_dataset}/{task}", "{model}", "{seed}")
            ],
            **_alignment,
        params:
            ckpt=lambda wc: checkpoint_dir(wc.model, wc.seed),
            zeroshot=zeroshot_args(_dataset),
            alignment=lambda wc, output: f"--alignment-out {shlex.quote(output.alignment)}" if "alignment" in output.keys() else "",
            settings=FEATURES_SETTINGS,
        threads: 1  # mostly start-up and small batches: two such jobs side by side beat one with two threads
        log:
            f"{R}/logs/features/{{model}}-seed{{seed}}-{_dataset}.log",
        conda:
            CONDA_ENV
        shell:
            "{BENCH} features --config {CONFIGFILE:q} --model {wildcards.model} --seed {wildcards.seed} "
            "--checkpoint {params.ckpt:q} --manifest {input.manifest:q} --split {input.split:q} "
            "--out {output.features:q} {params.zeroshot} {params.alignment} --threads {threads} 2> {log:q}"


rule image_statistics:
    input:
        manifest=lambda wc: manifest(wc.dataset),
        split=lambda wc: split_file(wc.dataset),
        settings=settings_stamp("image_statistics", IMAGE_STATISTICS_SETTINGS),
    output:
        f"{R}/features/image_statistics/seed0/{{dataset}}.npz",
    params:
        settings=IMAGE_STATISTICS_SETTINGS,
    log:
        f"{R}/logs/features/image_statistics-{{dataset}}.log",
    conda:
        CONDA_ENV
    shell:
        "{BENCH} image-statistics --config {CONFIGFILE:q} --manifest {input.manifest:q} --split {input.split:q} "
        "--out {output:q} 2> {log:q}"


rule linear_probe:
    wildcard_constraints:
        model="|".join(MODELS + BASELINES),
    input:
        features=f"{R}/features/{{model}}/seed{{seed}}/{{dataset}}.npz",
        manifest=lambda wc: manifest(wc.dataset),
        split=lambda wc: split_file(wc.dataset),
        settings=settings_stamp("linear_probe", PROBE_SETTINGS),
    output:
        chosen=probe_files("{dataset}/{task}", "{model}", "{seed}"),
        fixed_c=probe_files("{dataset}/{task}", "{model}", "{seed}", protocol="linear_probe_fixed_c"),
    params:
        fractions=" ".join(fraction_label(f) for f in FRACTIONS),
        fixed_c=lambda wc, output: f"--fixed-c-out {' '.join(shlex.quote(p) for p in output.fixed_c)}"
        if output.fixed_c else "",
        settings=PROBE_SETTINGS,
    log:
        f"{R}/logs/probe/{{dataset}}-{{task}}-{{model}}-seed{{seed}}.log",
    conda:
        CONDA_ENV
    shell:
        "{BENCH} probe --config {CONFIGFILE:q} --model {wildcards.model} --seed {wildcards.seed} "
        "--task {wildcards.dataset}/{wildcards.task} --manifest {input.manifest:q} --split {input.split:q} "
        "--features {input.features:q} --fraction {params.fractions} --out {output.chosen:q} {params.fixed_c} "
        "2> {log:q}"


# Full fine-tune (finetune.enabled): one job per (task, model, seed) writes every fraction.
if config["finetune"]["enabled"]:

    rule finetune:
        input:
            weights=f"{R}/checkpoints/{{model}}/seed{{seed}}/model.safetensors",
            manifest=lambda wc: manifest(wc.dataset),
            split=lambda wc: split_file(wc.dataset),
            settings=settings_stamp("finetune", FINETUNE_SETTINGS),
        output:
            finetune_files("{dataset}/{task}", "{model}", "{seed}", every_task=True),
        params:
            ckpt=lambda wc: checkpoint_dir(wc.model, wc.seed),
            fractions=" ".join(fraction_label(f) for f in config["finetune"]["fractions"]),
            settings=FINETUNE_SETTINGS,
        threads: config["finetune"].get("threads", THREADS)
        log:
            f"{R}/logs/finetune/{{dataset}}-{{task}}-{{model}}-seed{{seed}}.log",
        conda:
            CONDA_ENV
        shell:
            "{BENCH} finetune --config {CONFIGFILE:q} --model {wildcards.model} --seed {wildcards.seed} "
            "--task {wildcards.dataset}/{wildcards.task} --checkpoint {params.ckpt:q} --manifest {input.manifest:q} "
            "--split {input.split:q} --fraction {params.fractions} --out {output:q} --threads {threads} 2> {log:q}"


# Protocols registered with a run function (benchmark/protocols.py), when their config
# section says enabled: one generic rule each, one job per (task, model, seed) writing
# every cell, through the `evaluate --protocol NAME` command.
def generic_source(protocol):
    if protocol.reads == "checkpoint":
        return f"{R}/checkpoints/{{model}}/seed{{seed}}/model.safetensors"
    return f"{R}/features/{{model}}/seed{{seed}}/{{dataset}}.npz"


for _protocol in GENERIC_PROTOCOLS:
    _settings = config_hash(config[_protocol.name], config["split"]["draws"], config["split"]["validation"])

    rule:
        name:
            f"evaluate_{_protocol.name}"
        input:
            source=generic_source(_protocol),
            manifest=lambda wc: manifest(wc.dataset),
            split=lambda wc: split_file(wc.dataset),
            settings=settings_stamp(f"evaluate_{_protocol.name}", _settings),
        output:
            protocol_files(_protocol, "{dataset}/{task}", "{model}", "{seed}", every_task=True),
        params:
            protocol=_protocol.name,
            input=lambda wc, input, p=_protocol: checkpoint_dir(wc.model, wc.seed) if p.reads == "checkpoint"
            else input.source,
            fractions="--fraction " + " ".join(fraction_label(f) for f in config[_protocol.name].get("fractions", FRACTIONS))
            if _protocol.fraction else "",
            settings=_settings,
        threads: 1
        log:
            f"{R}/logs/{_protocol.name}/{{dataset}}-{{task}}-{{model}}-seed{{seed}}.log",
        conda:
            CONDA_ENV
        shell:
            "{BENCH} evaluate --protocol {params.protocol} --config {CONFIGFILE:q} --model {wildcards.model} "
            "--seed {wildcards.seed} --task {wildcards.dataset}/{wildcards.task} --input {params.input:q} "
            "--manifest {input.manifest:q} --split {input.split:q} {params.fractions} --out {output:q} "
            "--threads {threads} 2> {log:q}"
