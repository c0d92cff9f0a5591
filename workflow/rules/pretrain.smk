# Pretraining under the shared budget; checkpoint + ledger per (model, seed). With
# pretrain.gpus > 1 the job runs the trainer under torchrun (one process per GPU); with
# pretrain.nodes > 1 it is one SLURM job of that many nodes, and benchmark/launch.py starts
# one torchrun per node (srun) meeting at a rendezvous on the first node.

GPUS = config["pretrain"]["gpus"]
NODES = config["pretrain"]["nodes"]
TRAIN_THREADS = config["pretrain"].get("threads", THREADS)
if NODES > 1:
    TRAIN = (f"python -m benchmark.launch --nodes {NODES} --procs-per-node {max(GPUS, 1)} --gpus-per-node {GPUS} "
             f"--cpus-per-task {TRAIN_THREADS} --")
elif GPUS > 1:
    TRAIN = f"python -m torch.distributed.run --standalone --nproc_per_node {GPUS} -m benchmark"
else:
    TRAIN = BENCH
# A multi-node job is the SLURM executor's "mpi" kind: the rule's own srun places the
# tasks, and each node gets GPUS GPUs (a GRES, per node) rather than GPUS in total.
CLUSTER_SHAPE = ({"nodes": NODES, "tasks": NODES, "mpi": "srun"} | ({"gres": f"gpu:{GPUS}"} if GPUS else {})
                 if NODES > 1 else {"gpu": GPUS})


PRETRAIN_SETTINGS = {model: model_settings(model) for model in TRAINED_MODELS}
PRETRAIN_STAMPS = settings_stamps("pretrain", PRETRAIN_SETTINGS)


rule pretrain:
    wildcard_constraints:
        model="|".join(TRAINED_MODELS) or "^$",
    input:
        manifest=manifest(PRETRAIN_DATASET),
        split=split_file(PRETRAIN_DATASET),
        tokenizer=lambda wc: f"{R}/tokenizer/tokenizer.json" if needs_tokenizer(wc.model) else [],
        text_tower=lambda wc: text_tower_weights(wc.model),
        aligned_mlo=lambda wc: aligned_mlo(wc.model),
        settings=lambda wc: PRETRAIN_STAMPS[wc.model],
    output:
        weights=f"{R}/checkpoints/{{model}}/seed{{seed}}/model.safetensors",
        ledger=f"{R}/checkpoints/{{model}}/seed{{seed}}/ledger.json",
    params:
        tokenizer=lambda wc, input: f"--tokenizer {shlex.quote(input.tokenizer)}" if input.tokenizer else "",
        text_tower=lambda wc: " ".join(f"--text-tower {shlex.quote(str(Path(w).parent))}"
                                       for w in text_tower_weights(wc.model)),
        aligned_mlo=lambda wc, input: f"--aligned-mlo {shlex.quote(input.aligned_mlo)}" if input.aligned_mlo else "",
        out=lambda wc: checkpoint_dir(wc.model, wc.seed),
        settings=lambda wc: PRETRAIN_SETTINGS[wc.model],
    threads: TRAIN_THREADS
    resources:
        **CLUSTER_SHAPE,
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
IMPORT_SETTINGS = {model: config_hash(config["models"][model]) for model in EXTERNAL_MODELS}
IMPORT_STAMPS = settings_stamps("import_checkpoint", IMPORT_SETTINGS)


rule import_checkpoint:
    wildcard_constraints:
        model="|".join(EXTERNAL_MODELS) or "^$",
    input:
        source=lambda wc: str(source_file(config["models"][wc.model])),
        settings=lambda wc: IMPORT_STAMPS[wc.model],
    output:
        weights=f"{R}/checkpoints/{{model}}/seed{{seed}}/model.safetensors",
        ledger=f"{R}/checkpoints/{{model}}/seed{{seed}}/ledger.json",
    params:
        out=lambda wc: checkpoint_dir(wc.model, wc.seed),
        settings=lambda wc: IMPORT_SETTINGS[wc.model],
    log:
        f"{R}/logs/import_checkpoint/{{model}}-seed{{seed}}.log",
    conda:
        CONDA_ENV
    shell:
        "{BENCH} import-checkpoint --config {CONFIGFILE:q} --model {wildcards.model} --seed {wildcards.seed} "
        "--out-dir {params.out:q} 2> {log:q}"
