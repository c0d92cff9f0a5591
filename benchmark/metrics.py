"""The metric registry: one entry per metric of ``table.csv``, in the style of the model
registry (a name, what it needs, its function). ``benchmark/tables.py`` computes every
registered metric that applies to a task; the wide tables and the figures take their
titles, labels, order and chance levels from here. docs/extending.md adds one.

A metric's function sees one cell's evaluated units and a resampling matrix of patients:
``compute(y_n, scores_nk, counts_bp, patient_n) -> values_b`` (``counts_bp``: how often
each patient is drawn in each resample; one all-ones row is the full set). A
``thresholded`` metric also gets the threshold chosen on the validation split:
``compute(y_n, score_n, threshold, counts_bp, patient_n)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from benchmark.registry import Registry
from benchmark.stats import clustered_auc, clustered_bacc, clustered_sens_spec
from benchmark.tasks import Task


@dataclass(frozen=True)
class Metric:
    name: str  # the `metric` column of table.csv
    title: str  # block title in the wide tables (table.md, .tex, .html)
    label: str  # axis label in the figures
    compute: Callable  # see the module docstring
    units: str = "image"  # "image", "breast" (the mean of a breast's views), or "task" (the task's own level)
    thresholded: bool = False  # needs a threshold chosen on validation (two-class tasks only)
    in_figures: bool = False  # drawn in the bar and label-efficiency figures
    chance: Callable[[Task], float] | None = None  # the value of a random scorer (a dotted line in figures)

    def applies(self, task: Task) -> bool:
        if self.units == "breast" and not task.breast_level:
            return False
        return not (self.thresholded and task.n_classes != 2)

    def breast_units(self, task: Task) -> bool:
        return self.units == "breast" or (self.units == "task" and task.breast_level)


METRICS: dict[str, Metric] = Registry("metric")
register_metric = METRICS.register


def _sensitivity(y_n, score_n, threshold, counts_bp, patient_n):
    return clustered_sens_spec(y_n, score_n, threshold, counts_bp, patient_n)[0]


def _specificity(y_n, score_n, threshold, counts_bp, patient_n):
    return clustered_sens_spec(y_n, score_n, threshold, counts_bp, patient_n)[1]


# Registration order is the order of the wide tables' blocks.
register_metric(Metric("auc", "AUC", "AUC", clustered_auc, in_figures=True, chance=lambda task: 0.5))
register_metric(Metric("bacc", "Balanced accuracy", "balanced accuracy", clustered_bacc, in_figures=True,
                       chance=lambda task: 1 / task.n_classes))
register_metric(Metric("auc_breast", "AUC (breast level)", "AUC, breast level", clustered_auc, units="breast"))
register_metric(Metric("sens", "Sensitivity (threshold chosen on validation)", "sensitivity", _sensitivity,
                       units="task", thresholded=True))
register_metric(Metric("spec", "Specificity (threshold chosen on validation)", "specificity", _specificity,
                       units="task", thresholded=True))


def figure_metrics() -> list[Metric]:
    return [m for m in METRICS.values() if m.in_figures]
