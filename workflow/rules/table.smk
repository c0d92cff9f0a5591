# Bootstrap statistics over all predictions -> table.csv (+ .md, .tex, .html); ledgers -> budget.csv.
TABLE_SETTINGS = config_hash(config["stats"], MODELS, TASKS)
SUBGROUP_SETTINGS = config_hash(config["subgroups"], config["stats"], MODELS, TASKS)


rule table:
    input:
        predictions=prediction_files(),
        ledgers=[f"{R}/checkpoints/{model}/seed{seed}/ledger.json" for model in MODELS for seed in MODEL_SEEDS[model]],
        settings=settings_stamp("table", TABLE_SETTINGS),
    output:
        table=report(f"{R}/table.csv", caption="../report/table.rst", category="Table",
                     labels={"file": "table.csv (download)"}),
        markdown=f"{R}/table.md",
        html=report(f"{R}/table.html", caption="../report/table_html.rst", category="Table",
                    labels={"file": "table (wide layout)"}),
        latex=f"{R}/table.tex",
        budget=report(f"{R}/budget.csv", caption="../report/budget.rst", category="Table",
                      labels={"file": "budget.csv (download)"}),
        loss_terms=f"{R}/loss_terms.csv",
    params:
        settings=TABLE_SETTINGS,
    log:
        f"{R}/logs/table.log",
    conda:
        CONDA_ENV
    shell:
        "{BENCH} table --config {CONFIGFILE:q} --predictions {input.predictions:q} --ledgers {input.ledgers:q} "
        "--out {output.table:q} --budget-out {output.budget:q} 2> {log:q}"


rule subgroups:
    input:
        predictions=subgroup_files(),
        manifests=[manifest(d) for d in sorted({t.split("/")[0] for t in TASKS})],
        settings=settings_stamp("subgroups", SUBGROUP_SETTINGS),
    output:
        report(f"{R}/subgroups.csv", caption="../report/subgroups_table.rst", category="Table",
               labels={"file": "subgroups.csv (download)"}),
    params:
        settings=SUBGROUP_SETTINGS,
        manifests=lambda wc, input: " ".join(shlex.quote(f"{Path(p).parent.name}={p}") for p in input.manifests),
    log:
        f"{R}/logs/subgroups.log",
    conda:
        CONDA_ENV
    shell:
        "{BENCH} subgroups --config {CONFIGFILE:q} --predictions {input.predictions:q} "
        "--manifests {params.manifests} --out {output:q} 2> {log:q}"
