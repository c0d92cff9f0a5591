"""Forest plot of subgroup gaps (from ``subgroups.csv``): per analysed cell a panel, per
subgroup a row, per model a marker at its gap to the whole test set with the method-level
interval; subgroups below the minimum size are labelled "too small" instead of drawn."""

from __future__ import annotations

import textwrap

import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from benchmark.figures.bars import cell_label
from benchmark.figures.style import (
    COLUMN_IN,
    PAGE_IN,
    figure,
    metric_label,
    model_style,
    styled,
    task_title,
)
from benchmark.protocols import cell_order

GAP_INTERVAL = ("method_gap_ci_low", "method_gap_ci_high")
LABELS_IN = 2.3  # left of the panels: the subgroup labels, inside the page width
LABEL_CHARS = 36  # about what LABELS_IN holds at 6 pt


def _group_label(attribute: str, group: str, note: str) -> str:
    label = f"{attribute}: {group}" + (" (too small)" if note.startswith("too small") else "")
    return textwrap.fill(label, LABEL_CHARS)  # long names take two lines, within LABELS_IN


@styled
def plot_subgroups(rows: pd.DataFrame, task_key: str, models: list[str]):
    dataset, task = task_key.split("/")
    rows = rows[(rows.dataset == dataset) & (rows.task == task)].copy()
    if rows.empty:
        raise ValueError(f"subgroups table has no rows for {task_key}")
    rows["fraction"] = rows["fraction"].fillna("").astype(str)
    metric = rows["metric"].iloc[0]  # the first configured metric
    rows = rows[rows.metric == metric]
    cells = sorted({(r.protocol, r.fraction) for r in rows.itertuples()}, key=lambda c: cell_order(*c))
    groups = rows[["attribute", "subgroup"]].drop_duplicates().to_numpy().tolist()  # in the table's order
    present = [m for m in models if m in set(rows.model)]
    styles = model_style(models)
    width = min(PAGE_IN, LABELS_IN + COLUMN_IN * len(cells) * 0.6)  # the labels inside the figure
    fig, axes = figure(width, 0.6 + 0.16 * len(groups) * max(1, len(present)) ** 0.5, ncols=len(cells), sharey=True)
    y = np.arange(len(groups))[::-1].astype(float)
    spread = 0.7 / max(1, len(present))
    for ax, (protocol, fraction) in zip(axes[0], cells):
        cell = rows[(rows.protocol == protocol) & (rows.fraction == fraction)]
        for i, model in enumerate(present):
            by_group = cell[cell.model == model].set_index(["attribute", "subgroup"])
            picked = by_group.reindex(pd.MultiIndex.from_tuples([tuple(g) for g in groups]))
            gap, low, high = (picked[c].to_numpy(float) for c in ("gap", *GAP_INTERVAL))
            offset = y + 0.35 - spread * (i + 0.5)
            ax.errorbar(gap, offset, xerr=[gap - low, high - gap], fmt=styles[model]["marker"], markersize=2.5,
                        color=styles[model]["color"], elinewidth=0.6, capsize=0, label=model)
        ax.axvline(0, color="grey", linewidth=0.5, linestyle=":")
        ax.set_title(cell_label(protocol, fraction).replace("\n", " "))
        ax.set_xlabel(f"{metric_label(metric)}: subgroup minus all")
        ax.grid(axis="x", alpha=0.3, linewidth=0.5)
        ax.xaxis.set_major_locator(MaxNLocator(4, symmetric=True))
    # a subgroup's size is the same in every cell (the same test images): say it in its label
    notes = rows.drop_duplicates(["attribute", "subgroup"]).set_index(["attribute", "subgroup"])["note"]
    axes[0][0].set_yticks(y, [_group_label(attribute, group, str(notes.get((attribute, group), "") or ""))
                              for attribute, group in groups])
    fig.suptitle(f"{task_title(task_key)}: subgroup gaps (95 % method-level intervals)")
    fig.tight_layout(rect=(0, 0, 1, 0.95))  # room above the panels for the legend, centred on the page
    fig.legend(*axes[0][0].get_legend_handles_labels(), ncol=min(len(present), 7), frameon=False,
               loc="upper center", bbox_to_anchor=(0.5, 0.97))
    return fig
