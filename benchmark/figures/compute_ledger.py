"""The compute ledger: samples seen, device hours and training FLOPs per model (from
``budget.csv``): the check that every method got the same budget. Bars are the mean
over pretraining seeds, dots the individual runs. An external checkpoint's model has no bar
("not trained here"); untrained controls (no sample seen in any run) are left out."""

from __future__ import annotations

import numpy as np
import pandas as pd

from benchmark.figures.style import PAGE_IN, figure, model_style, styled

PANELS = (("samples_seen", "samples seen", 1.0), ("device_seconds", "device hours", 1 / 3600),
          ("flops", "training compute (PFLOP)", 1e-15))


def not_trained_here(budget: pd.DataFrame) -> set[str]:
    """Models whose checkpoints came from elsewhere (external entries)."""
    if "trained_here" not in budget:
        return set()
    return {m for m, trained in budget.groupby("model")["trained_here"] if not trained.astype(bool).any()}


@styled
def plot_compute_ledger(budget: pd.DataFrame, models: list[str]):
    present = [m for m in models if m in set(budget.model)]
    if not present:
        raise ValueError("budget has no rows for the configured models")
    external = not_trained_here(budget)
    # untrained controls spend nothing: left out, unless nothing else is there
    untrained = [m for m in present if m not in external and (budget.samples_seen[budget.model == m] == 0).all()]
    if len(untrained) < len(present):
        present = [m for m in present if m not in untrained]
    else:
        untrained = []
    styles = model_style(models)
    fig, axes = figure(PAGE_IN, 2.0, ncols=len(PANELS))
    x = np.arange(len(present))
    for ax, (column, label, scale) in zip(axes[0], PANELS):
        runs = [budget.loc[budget.model == m, column].to_numpy(float) * scale for m in present]
        ax.bar(x, [r.mean() for r in runs], color=[styles[m]["color"] for m in present], width=0.7)
        for i, values in enumerate(runs):
            ax.scatter(np.full(len(values), x[i]), values, s=4, color="black", zorder=3)
            if present[i] in external:
                ax.text(x[i], 0, "not trained here", rotation=90, ha="center", va="bottom", fontsize=5)
        ax.set_xticks(x, present, rotation=45, ha="right")
        ax.set_ylabel(label)
        ax.set_title(label)
        ax.grid(axis="y", alpha=0.3, linewidth=0.5)
    device = ", ".join(sorted(set(budget.device.dropna().astype(str))))
    left_out = f"; untrained controls left out: {len(untrained)}" if untrained else ""
    fig.suptitle(f"Compute ledger per pretraining run (device: {device}; bars: mean over seeds, dots: runs{left_out})")
    fig.tight_layout()
    return fig
