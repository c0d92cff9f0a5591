# Pretraining under the shared budget; checkpoint + ledger per (model, seed). With
# pretrain.gpus > 1 the job runs the trainer under torchrun (one process per GPU).

GPUS = config["pretrain"]["gpus"]
TRAIN = (f"python -m torch.distributed.run --standalone --nproc_per_node {GPUS} -m benchmark"
         if GPUS > 1 else BENCH)


rule pretrain:
    wildcard_constraints:
        model="|".join(TRAINED_MODELS) or "^$",
    input:
        manifest=manifest(PRETRAIN_DATASET),
        split=split_file(PRETRAIN_DATASET),
        tokenizer=lambda wc: f"{R}/tokenizer/tokenizer.json" if needs_tokenizer(wc.model) else [],
        text_tower=lambda wc: text_tower_weights(wc.model),
        aligned_mlo=lambda wc: aligned_mlo(wc.model),
    output:
        weights=f"{R}/checkpoints/{{model}}/seed{{seed}}/model.safetensors",
        ledger=f"{R}/checkpoints/{{model}}/seed{{seed}}/ledger.json",
    params:
        tokenizer=lambda wc, input: f"--tokenizer {shlex.quote(input.tokenizer)}" if input.tokenizer else "",
        text_tower=lambda wc: " ".join(f"--text-tower {shlex.quote(str(Path(w).parent))}"
                                       for w in text_tower_weights(wc.model)),
        aligned_mlo=lambda wc, input: f"--aligned-mlo {shlex.quote(input.aligned_mlo)}" if input.aligned_mlo else "",
        out=lambda wc: checkpoint_dir(wc.model, wc.seed),
        settings=lambda wc: model_settings(wc.model),
    threads: config["pretrain"].get("threads", THREADS)
    resources:
        gpu=GPUS,
        runtime=config["pretrain"]["runtime_minutes"],
        mem_mb=config["pretrain"]["mem_mb"],
    log:
        f"{R}/logs/pretrain/{{model}}-seed{{seed}}.log",
    conda:
        CONDA_ENV
    shell:
        "{TRAIN} pretrain --config {CONFIGFILE:q} --model {wildcards.model} --seed {wildcards.seed} "
        "--manifest {input.manifest:q} --split {input.split:q} {params.tokenizer} {params.text_tower} {params.aligned_mlo} --out-dir {params.out:q} "
        "--threads {threads} 2> {log:q}"


# An external model (``external: true``) is not trained here: its checkpoint, in its
# publisher's format or from another results folder, becomes this benchmark's checkpoint
# (benchmark/external.py), with a ledger saying so.
rule import_checkpoint:
    wildcard_constraints:
        model="|".join(EXTERNAL_MODELS) or "^$",
    input:
        source=lambda wc: str(source_file(config["models"][wc.model])),
    output:
        weights=f"{R}/checkpoints/{{model}}/seed{{seed}}/model.safetensors",
        ledger=f"{R}/checkpoints/{{model}}/seed{{seed}}/ledger.json",
    params:
        out=lambda wc: checkpoint_dir(wc.model, wc.seed),
        settings=lambda wc: config_hash(config["models"][wc.model]),
    log:
        f"{R}/logs/import_checkpoint/{{model}}-seed{{seed}}.log",
    conda:
        CONDA_ENV
    shell:
        "{BENCH} import-checkpoint --config {CONFIGFILE:q} --model {wildcards.model} --seed {wildcards.seed} "
        "--out-dir {params.out:q} 2> {log:q}"
