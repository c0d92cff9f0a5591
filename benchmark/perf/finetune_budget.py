"""What do the fine-tune's settings change? For a finished run, the 100 % fine-tune of the
local-evidence tasks is rerun on the run's own checkpoints (every pretrained model and its
untrained architecture, every seed) once with the run's settings (the baseline, measured in
the same call) and once per variant, each variant changing some keys of ``finetune``.
Prints, per variant and task: the mean best validation AUC of the pretrained models (the
shuffled-caption control among them) and of the untrained ones, the mean test gain of a
pretrained model over its own untrained architecture, how many of those gains have a
method-level interval above 0 (the table's ``control_delta_ci_low`` > 0), and the wall time
against the baseline's.

    python -m benchmark.perf.finetune_budget [--results results] [--tasks embed/birads rsna/cancer]
        [--variant lr=3e-4] [--variant steps=80] [--jobs 2] [--out DIR]

docs/synthetic-data.md ("The fine-tune's settings and the third seed") has its figures.
The validation column is the one a choice of settings may be made on; the test columns say
what a choice would have done to the table.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from benchmark.config import model_controls, typed_value
from benchmark.errors import BenchmarkError

TASKS = ["embed/birads", "rsna/cancer"]


def variant_settings(finetune: dict, spec: str) -> dict:
    """``finetune`` with the ``key=value`` pairs of ``spec`` (comma-separated) in place; a key
    the section does not have is an error."""
    settings = dict(finetune)
    for pair in filter(None, spec.split(",")):
        key, _, value = pair.partition("=")
        if key not in finetune:
            raise BenchmarkError(f"finetune_budget: --variant {spec!r}: finetune has no key {key!r} "
                                 f"(it has {', '.join(sorted(finetune))})")
        settings[key] = typed_value(value)
    return settings


def _finetune_job(job: tuple) -> None:
    from threadpoolctl import threadpool_limits

    from benchmark.evaluate.run import run_finetune

    config, results, model, seed, task, out = job
    dataset = task.split("/")[0]
    with threadpool_limits(1):
        run_finetune(config, results / "checkpoints" / model / f"seed{seed}", model, seed, task,
                     results / "cache" / dataset / "manifest.csv", results / "splits" / f"{dataset}.csv", [1.0],
                     [str(out)], 1)


def run_variant(config: dict, results: Path, tasks: list[str], models: list[str], out: Path, jobs: int) -> float:
    """Fine-tune every (task, model, seed) at 100 % into ``out``; return the wall seconds."""
    todo = [(config, results, model, seed, task, out / task / model / f"seed{seed}.csv")
            for task in tasks for model in models for seed in config["seeds"]]
    for job in todo:
        job[-1].parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(_finetune_job, todo))
    return time.perf_counter() - start


def best_validation(out: Path, untrained: set[str]) -> dict[tuple[str, bool], float]:
    """Mean over fine-tunes of the best validation AUC, per (task, untrained or not)."""
    values: dict[tuple[str, bool], list[float]] = {}
    for record in sorted(out.glob("*/*/*/seed*.json")):
        task, model = record.parts[-3], record.parts[-2]
        history = json.loads(record.read_text())["history"]
        values.setdefault((task, model in untrained), []).append(max(h["val_auc"] for h in history))
    return {key: float(np.mean(v)) for key, v in values.items()}


def control_gains(table: pd.DataFrame, controls: list[str]) -> pd.DataFrame:
    """The AUC rows of pretrained models (not controls) that have an untrained architecture to
    compare with: their gain over it and whether its method-level interval lies above 0."""
    rows = table[(table["metric"] == "auc") & table["delta_vs_control"].notna() & ~table["model"].isin(controls)]
    return rows.assign(above_zero=rows["control_delta_ci_low"] > 0)


def summarise(out: Path, config: dict) -> dict:
    from benchmark.evaluate.predictions import read_predictions
    from benchmark.tables import table_from_predictions

    controls, control_of = model_controls(config["models"])
    predictions = pd.concat([read_predictions(p) for p in sorted(out.glob("*/*/*/seed*.csv"))], ignore_index=True)
    stats = config["stats"]
    table = table_from_predictions(predictions, stats["n_boot"], stats["seed"], stats["ci"], None, controls=controls,
                                   metrics=["auc"], control_of=control_of)
    gains = control_gains(table, controls)
    untrained = {name for name, entry in config["models"].items() if not entry.get("pretrain", True)}
    return {"validation": best_validation(out, untrained), "gains": gains}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--tasks", nargs="+", default=TASKS)
    parser.add_argument("--variant", action="append", default=[], help="finetune keys to change, e.g. lr=3e-4,steps=80")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--out", type=Path, help="where the fine-tunes write (default: a temporary folder)")
    args = parser.parse_args()

    config = yaml.safe_load((args.results / "config.effective.yaml").read_text())
    _, control_of = model_controls(config["models"])
    models = sorted(set(control_of) | set(control_of.values()))
    out = args.out or Path(tempfile.mkdtemp(prefix="finetune_budget-"))
    variants = {"baseline": config["finetune"]}
    variants.update({spec: variant_settings(config["finetune"], spec) for spec in args.variant})
    print(f"{', '.join(args.tasks)} at 100 %: {len(models)} models x {len(config['seeds'])} seeds per variant; "
          f"{args.jobs} jobs of one thread; fine-tunes in {out}")
    print(f"{'variant':<20} {'task':<8} {'val AUC pretrained':>18} {'untrained':>10} {'mean test gain':>15} "
          f"{'gains > 0':>10} {'seconds':>8} {'x base':>7}")
    base_seconds = None
    for name, settings in variants.items():
        folder = out / name.replace("/", "_")
        seconds = run_variant({**config, "finetune": settings}, args.results, args.tasks, models, folder, args.jobs)
        base_seconds = base_seconds or seconds
        summary = summarise(folder, config)
        val, gains = summary["validation"], summary["gains"]
        for task in (t.split("/")[1] for t in args.tasks):
            task_gains = gains[gains["task"] == task]
            print(f"{name:<20} {task:<8} {val[task, False]:18.3f} {val[task, True]:10.3f} "
                  f"{task_gains['delta_vs_control'].mean():+15.3f} {int(task_gains['above_zero'].sum()):>5} of "
                  f"{len(task_gains):<2} {seconds:8.0f} {seconds / base_seconds:7.2f}")
        above = gains[gains["above_zero"]]
        print(f"{'':<20} above 0: " + (", ".join(f"{r.model} {r.task}" for r in above.itertuples()) or "none"))


if __name__ == "__main__":
    main()
