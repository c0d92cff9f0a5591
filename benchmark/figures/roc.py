"""ROC curves per task from the saved test predictions: a panel per protocol at the full
label fraction, a line per model (the vertical mean over pretraining seeds), RSNA also at
breast level. Multi-class tasks show the macro mean of the one-vs-rest curves; the legend
gives each model's AUC from ``table.csv``, the number the table reports."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import roc_curve

from benchmark.figures.style import (
    PAGE_IN,
    figure,
    model_style,
    protocol_title,
    styled,
    task_title,
)
from benchmark.protocols import cell_order
from benchmark.tables import evaluation_units
from benchmark.tasks import get_task

FPR_GRID = np.linspace(0.0, 1.0, 201)


def mean_roc(labels: np.ndarray, scores_nk: np.ndarray) -> np.ndarray:
    """TPR on ``FPR_GRID``: the binary curve, or the mean of the one-vs-rest curves."""
    classes = [1] if scores_nk.shape[1] == 2 else [k for k in range(scores_nk.shape[1])
                                                    if 0 < (labels == k).sum() < len(labels)]
    if not classes or len(np.unique(labels)) < 2:
        return np.full_like(FPR_GRID, np.nan)
    curves = []
    for k in classes:
        fpr, tpr, _ = roc_curve(labels == k, scores_nk[:, k])
        curve = np.interp(FPR_GRID, fpr, tpr)
        curve[0] = 0.0
        curves.append(curve)
    return np.mean(curves, axis=0)


def roc_panels(predictions: pd.DataFrame) -> list[tuple[str, str]]:
    """(protocol, fraction) cells drawn: zero-shot ones and every protocol at fraction 1."""
    cells = {(p, f) for p, f in zip(predictions.protocol, predictions.fraction) if f in ("", "1")}
    return sorted(cells, key=lambda c: cell_order(*c))


def _auc_label(table: pd.DataFrame, task, protocol, fraction, model, metric) -> str:
    row = table[(table.dataset == task.dataset) & (table.task == task.name) & (table.protocol == protocol)
                & (table.fraction.fillna("").astype(str) == fraction) & (table.model == model)
                & (table.metric == metric)]
    return f"{model} ({row.value.iloc[0]:.3f})" if len(row) and pd.notna(row.value.iloc[0]) else model


@styled
def plot_roc(predictions: pd.DataFrame, table: pd.DataFrame, task_key: str, models: list[str]):
    """``predictions``: the task's rows of every predictions file (any split; test is used)."""
    task = get_task(*task_key.split("/"))
    test = predictions[(predictions.split == "test") & (predictions.draw == 0)]
    if test.empty:
        raise ValueError(f"no test predictions for {task_key}")
    panels = roc_panels(test)
    levels = [("image", "auc")] + ([("breast", "auc_breast")] if task.breast_level else [])
    styles = model_style(models)
    side = min((PAGE_IN - 0.3) / len(panels), 2.2)  # the legends overhang a little
    legend_cols = 2 if side >= 2.0 else 1
    legend_in = 0.11 * (-(-len(models) // legend_cols) + 1) + 0.15  # legend under each panel
    fig, axes = figure(side * len(panels), (side + legend_in) * len(levels) + 0.3, nrows=len(levels),
                       ncols=len(panels), layout="constrained")
    for col, (protocol, fraction) in enumerate(panels):
        cell = test[(test.protocol == protocol) & (test.fraction == fraction)]
        for row, (level, metric) in enumerate(levels):
            ax = axes[row][col]
            for model in models:
                runs = cell[cell.model == model]
                if runs.empty:
                    continue
                tprs = [mean_roc(*evaluation_units(run, task, level == "breast")[:2])
                        for _, run in runs.groupby("seed")]
                ax.plot(FPR_GRID, np.nanmean(tprs, axis=0), color=styles[model]["color"],
                        linestyle=styles[model]["linestyle"],
                        label=_auc_label(table, task, protocol, fraction, model, metric))
            ax.plot([0, 1], [0, 1], color="grey", linewidth=0.5, linestyle=":")
            ax.set_aspect("equal")
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
            title = protocol_title(protocol) + (", 100 % labels" if fraction else "")
            ax.set_title(f"{title}, {level} level" if task.breast_level else title)
            ax.set_xlabel("false positive rate")
            ax.set_ylabel("true positive rate")
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=legend_cols, frameon=False, fontsize=6,
                      handlelength=1.2, columnspacing=0.8, title="model (AUC from table.csv)", title_fontsize=6)
    kind = "binary" if task.n_classes == 2 else f"macro mean of {task.n_classes} one-vs-rest curves"
    fig.suptitle(f"{task_title(task_key)}: ROC on the test split ({kind})")
    return fig
