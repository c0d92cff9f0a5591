"""The compute ledger: samples seen, device hours and training FLOPs per model (from
``budget.csv``): the check that every method got the same budget. Bars are the mean
over pretraining seeds, dots the individual runs. An external checkpoint's model has no bar
("not trained here")."""

from __future__ import annotations

import numpy as np
import pandas as pd

from benchmark.figures.style import PAGE_IN, figure, model_style, styled

PANELS = (("samples_seen", "samples seen", 1.0), ("device_seconds", "device hours", 1 / 3600),
          ("flops", "training compute (PFLOP)", 1e-15))


@styled
def plot_compute_ledger(budget: pd.DataFrame, models: list[str]):
    present = [m for m in models if m in set(budget.model)]
    if not present:
        raise ValueError("budget has no rows for the configured models")
    styles = model_style(models)
    fig, axes = figure(PAGE_IN, 2.0, ncols=len(PANELS))
    x = np.arange(len(present))
    external = ({m for m in present if not budget.loc[budget.model == m, "trained_here"].astype(bool).any()}
                if "trained_here" in budget else set())
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
    fig.suptitle(f"Compute ledger per pretraining run (device: {device}; bars: mean over seeds, dots: runs)")
    fig.tight_layout()
    return fig
