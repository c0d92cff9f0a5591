"""Grouped bars: every protocol cell of a task (zero-shot, probe and fine-tune at each
label fraction) with a bar per model and its method-level interval as a whisker (read from
``table.csv``)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from benchmark.figures.style import (
    INTERVAL,
    INTERVAL_TITLE,
    PAGE_IN,
    figure,
    fraction_label,
    metric_label,
    model_style,
    styled,
    task_title,
)
from benchmark.metrics import METRICS as REGISTERED_METRICS
from benchmark.metrics import figure_metrics
from benchmark.protocols import PROTOCOLS, cell_order
from benchmark.tasks import get_task


def protocol_cells(rows: pd.DataFrame) -> list[tuple[str, str]]:
    """(protocol, fraction) in reading order: zero-shot first, then each protocol by fraction."""
    return sorted({(r.protocol, r.fraction) for r in rows.itertuples()}, key=lambda c: cell_order(*c))


def cell_label(protocol: str, fraction: str) -> str:
    label = PROTOCOLS[protocol].tick if protocol in PROTOCOLS else protocol
    return f"{label}\n{fraction_label(float(fraction))}" if fraction else label


@styled
def plot_bars(table: pd.DataFrame, task_key: str, models: list[str]):
    dataset, task = task_key.split("/")
    metrics = [m.name for m in figure_metrics()]
    drawn = [p.name for p in PROTOCOLS.values() if p.in_figures]
    rows = table[(table.dataset == dataset) & (table.task == task) & table.metric.isin(metrics)
                 & table.protocol.isin(drawn)].copy()
    if rows.empty:
        raise ValueError(f"table has no rows for {task_key}")
    rows["fraction"] = rows["fraction"].fillna("").astype(str)
    cells = protocol_cells(rows)
    present = [m for m in models if m in set(rows.model)]
    styles = model_style(models)
    fig, axes = figure(PAGE_IN, 1.8 * len(metrics), nrows=len(metrics), sharex=True)
    width = 0.8 / len(present)
    for ax, metric in zip(axes[:, 0], metrics):
        for i, model in enumerate(present):
            values, low, high = [], [], []
            for protocol, fraction in cells:
                cell = rows[(rows.protocol == protocol) & (rows.fraction == fraction) & (rows.metric == metric)
                            & (rows.model == model)]
                values.append(cell.value.iloc[0] if len(cell) else np.nan)
                low.append(cell[INTERVAL[0]].iloc[0] if len(cell) else np.nan)
                high.append(cell[INTERVAL[1]].iloc[0] if len(cell) else np.nan)
            values, low, high = map(np.asarray, (values, low, high))
            x = np.arange(len(cells)) - 0.4 + width * (i + 0.5)
            hatch = styles[model]["hatch"]
            ax.bar(x, values, width, color=styles[model]["color"], label=model, hatch=hatch, linewidth=0.3,
                   edgecolor="white" if hatch else None)
            ax.errorbar(x, values, yerr=[values - low, high - values], fmt="none", ecolor="black",
                        elinewidth=0.6, capsize=1.2)
        chance = REGISTERED_METRICS[metric].chance(get_task(dataset, task))
        ax.axhline(chance, color="grey", linewidth=0.5, linestyle=":")
        ax.set_ylabel(metric_label(metric))
        ax.set_ylim(0, 1)
        ax.grid(axis="y", alpha=0.3, linewidth=0.5)
    axes[-1][0].set_xticks(np.arange(len(cells)), [cell_label(*c) for c in cells])
    axes[-1][0].set_xlabel("protocol and labelled training patients")
    axes[0][0].legend(ncol=min(len(present), 6), frameon=False, loc="lower center", bbox_to_anchor=(0.5, 1.0))
    fig.suptitle(f"{task_title(task_key)}: every protocol (whiskers: {INTERVAL_TITLE}; "
                 "dotted: chance)")
    fig.tight_layout()
    return fig
