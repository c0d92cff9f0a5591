# Bootstrap statistics over all predictions -> table.csv (+ .md, .tex, .html); ledgers -> budget.csv.


rule table:
    input:
        predictions=prediction_files(),
        ledgers=expand(f"{R}/checkpoints/{{model}}/seed{{seed}}/ledger.json", model=MODELS, seed=SEEDS),
    output:
        table=report(f"{R}/table.csv", caption="../report/table.rst", category="Table",
                     labels={"file": "table.csv (download)"}),
        markdown=f"{R}/table.md",
        html=report(f"{R}/table.html", caption="../report/table_html.rst", category="Table",
                    labels={"file": "table (wide layout)"}),
        latex=f"{R}/table.tex",
        budget=report(f"{R}/budget.csv", caption="../report/budget.rst", category="Table",
                      labels={"file": "budget.csv (download)"}),
    params:
        settings=config_hash(config["stats"], MODELS, TASKS),
    log:
        f"{R}/logs/table.log",
    conda:
        CONDA_ENV
    shell:
        "{BENCH} table --config {CONFIGFILE:q} --predictions {input.predictions:q} --ledgers {input.ledgers:q} "
        "--out {output.table:q} --budget-out {output.budget:q} 2> {log:q}"
