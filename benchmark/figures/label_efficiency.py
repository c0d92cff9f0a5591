"""Label-efficiency curves: a metric against the share of labelled training patients, a
line per model with its method-level interval as a band, one figure per task (read from
``table.csv``)."""

from __future__ import annotations

import pandas as pd

from benchmark.figures.style import (
    COLUMN_IN,
    INTERVAL,
    INTERVAL_TITLE,
    PAGE_IN,
    figure,
    fraction_label,
    metric_label,
    model_style,
    protocol_title,
    styled,
    task_title,
)
from benchmark.metrics import figure_metrics
from benchmark.protocols import PROTOCOLS as REGISTERED_PROTOCOLS


@styled
def plot_label_efficiency(table: pd.DataFrame, task_key: str, models: list[str]):
    dataset, task = task_key.split("/")
    fraction_protocols = [p.name for p in REGISTERED_PROTOCOLS.values() if p.fraction and p.in_figures]
    metrics = [m.name for m in figure_metrics()]
    rows = table[(table.dataset == dataset) & (table.task == task) & table.protocol.isin(fraction_protocols)
                 & table.metric.isin(metrics)].copy()
    if rows.empty:
        raise ValueError(f"table has no linear-probe or fine-tune rows for {task_key}")
    rows["fraction"] = rows["fraction"].astype(float)
    protocols = [p for p in fraction_protocols if p in set(rows.protocol)]
    # one column wide for one protocol, half a page per protocol for two, never wider than the page
    fig, axes = figure(COLUMN_IN if len(protocols) == 1 else min(PAGE_IN, PAGE_IN / 2 * len(protocols)), 1.9 * len(metrics),
                       nrows=len(metrics), ncols=len(protocols), sharex=True)
    styles = model_style(models)
    fractions = sorted(rows.fraction.unique())
    for col, protocol in enumerate(protocols):
        for row, metric in enumerate(metrics):
            ax = axes[row][col]
            for model in models:
                line = rows[(rows.protocol == protocol) & (rows.metric == metric) & (rows.model == model)]
                line = line.sort_values("fraction")
                if line.empty:
                    continue
                style = styles[model]
                ax.plot(line.fraction, line.value, label=model, color=style["color"], marker=style["marker"],
                        linestyle=style["linestyle"])
                ax.fill_between(line.fraction, line[INTERVAL[0]], line[INTERVAL[1]], color=style["color"], alpha=0.15,
                                linewidth=0)
            ax.set_xscale("log")
            ax.set_xticks(fractions, [fraction_label(f) for f in fractions])
            ax.minorticks_off()
            ax.set_ylabel(metric_label(metric))
            ax.set_title(f"{protocol_title(protocol)}: {metric_label(metric)}")
            ax.grid(alpha=0.3, linewidth=0.5)
            if row == len(metrics) - 1:
                ax.set_xlabel("labelled training patients (log scale)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 3 * len(protocols)), frameon=False,
               bbox_to_anchor=(0.5, -0.02))
    fig.suptitle(f"{task_title(task_key)}: label efficiency\n(bands: {INTERVAL_TITLE})")
    fig.tight_layout(rect=(0, 0.1 if len(protocols) == 1 else 0.06, 1, 1))
    return fig

