# Bootstrap statistics over all predictions -> table.csv; ledgers -> budget.csv.


rule table:
    input:
        predictions=prediction_files(),
        ledgers=expand(f"{R}/checkpoints/{{model}}/seed{{seed}}/ledger.json", model=MODELS, seed=SEEDS),
    output:
        table=f"{R}/table.csv",
        markdown=f"{R}/table.md",
        latex=f"{R}/table.tex",
        budget=f"{R}/budget.csv",
    log:
        f"{R}/logs/table.log",
    shell:
        "{BENCH} table --config {CONFIGFILE} --predictions {input.predictions} --ledgers {input.ledgers} "
        "--out {output.table} --budget-out {output.budget} 2> {log}"
