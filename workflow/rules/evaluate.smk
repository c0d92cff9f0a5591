# Features once per (model, seed, dataset); zero-shot and linear-probe predictions per cell.


rule features:
    input:
        weights=f"{R}/checkpoints/{{model}}/seed{{seed}}/model.safetensors",
        manifest=lambda wc: manifest(wc.dataset),
        split=lambda wc: split_file(wc.dataset),
    output:
        f"{R}/features/{{model}}/seed{{seed}}/{{dataset}}.npz",
    params:
        ckpt=lambda wc: checkpoint_dir(wc.model, wc.seed),
    threads: THREADS
    log:
        f"{R}/logs/features/{{model}}-seed{{seed}}-{{dataset}}.log",
    shell:
        "{BENCH} features --config {CONFIGFILE} --checkpoint {params.ckpt} --manifest {input.manifest} "
        "--split {input.split} --out {output} --threads {threads} 2> {log}"


rule zeroshot:
    input:
        weights=f"{R}/checkpoints/{{model}}/seed{{seed}}/model.safetensors",
        features=f"{R}/features/{{model}}/seed{{seed}}/{{dataset}}.npz",
        manifest=lambda wc: manifest(wc.dataset),
        split=lambda wc: split_file(wc.dataset),
        prompts=config["zeroshot"]["prompts"],
    output:
        f"{R}/predictions/{{dataset}}/{{task}}/zeroshot/{{model}}/seed{{seed}}.csv",
    params:
        ckpt=lambda wc: checkpoint_dir(wc.model, wc.seed),
    log:
        f"{R}/logs/zeroshot/{{dataset}}-{{task}}-{{model}}-seed{{seed}}.log",
    shell:
        "{BENCH} zeroshot --config {CONFIGFILE} --model {wildcards.model} --seed {wildcards.seed} "
        "--task {wildcards.dataset}/{wildcards.task} --manifest {input.manifest} --split {input.split} "
        "--checkpoint {params.ckpt} --features {input.features} --out {output} --threads 1 2> {log}"


rule linear_probe:
    input:
        features=f"{R}/features/{{model}}/seed{{seed}}/{{dataset}}.npz",
        manifest=lambda wc: manifest(wc.dataset),
        split=lambda wc: split_file(wc.dataset),
    output:
        f"{R}/predictions/{{dataset}}/{{task}}/linear_probe_{{fraction}}/{{model}}/seed{{seed}}.csv",
    log:
        f"{R}/logs/probe/{{dataset}}-{{task}}-{{fraction}}-{{model}}-seed{{seed}}.log",
    shell:
        "{BENCH} probe --config {CONFIGFILE} --model {wildcards.model} --seed {wildcards.seed} "
        "--task {wildcards.dataset}/{wildcards.task} --manifest {input.manifest} --split {input.split} "
        "--features {input.features} --fraction {wildcards.fraction} --out {output} 2> {log}"
