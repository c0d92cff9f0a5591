"""The metric registry: one entry per metric of ``table.csv``, in the style of the model
registry (a name, what it needs, its function). ``benchmark/tables.py`` computes every
registered metric that applies to a task; the wide tables and the figures take their
titles, labels, order and chance levels from here. docs/extending.md adds one.

A metric's function sees one cell's evaluated units and a resampling matrix of patients:
``compute(y_n, scores_nk, counts_bp, patient_n) -> values_b`` (``counts_bp``: how often
each patient is drawn in each resample; one all-ones row is the full set). A metric with
a ``threshold`` rule gets the positive-class score and the threshold the rule chose on the
validation split: ``compute(y_n, score_n, threshold, counts_bp, patient_n)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from benchmark.registry import Registry
from benchmark.stats import (
    clustered_auc,
    clustered_bacc,
    clustered_pf1,
    clustered_sens_spec,
    specificity_threshold,
    youden_threshold,
)
from benchmark.tasks import Task


@dataclass(frozen=True)
class Metric:
    name: str  # the `metric` column of table.csv
    title: str  # block title in the wide tables (table.md, .tex, .html)
    label: str  # axis label in the figures
    compute: Callable  # see the module docstring
    units: str = "image"  # "image", or "breast" (a breast's score is the mean of its views)
    binary: bool = False  # two-class tasks only
    image_tasks_only: bool = False  # not for tasks scored per breast (a breast-level twin is registered)
    # Rule choosing the threshold on the validation split, (y_val, score_val) -> t; the metric
    # is then computed at that threshold (two-class tasks).
    threshold: Callable | None = None
    # A two-class task also thresholds this metric on validation with this rule (bacc).
    binary_threshold: Callable | None = None
    in_figures: bool = False  # drawn in the bar and label-efficiency figures
    chance: Callable[[Task], float] | None = None  # the value of a random scorer (a dotted line in figures)

    def applies(self, task: Task) -> bool:
        if self.units == "breast" and not task.breast_level:
            return False
        if self.image_tasks_only and task.breast_level:
            return False
        return not ((self.binary or self.threshold) and task.n_classes != 2)

    def threshold_rule(self, task: Task) -> Callable | None:
        """The validation threshold rule this metric uses on ``task``, if any."""
        if self.threshold is not None:
            return self.threshold
        return self.binary_threshold if task.n_classes == 2 else None


METRICS: dict[str, Metric] = Registry("metric")
register_metric = METRICS.register


def _sensitivity(y_n, score_n, threshold, counts_bp, patient_n):
    return clustered_sens_spec(y_n, score_n, threshold, counts_bp, patient_n)[0]


def _specificity(y_n, score_n, threshold, counts_bp, patient_n):
    return clustered_sens_spec(y_n, score_n, threshold, counts_bp, patient_n)[1]


def _balanced_accuracy(y_n, scores, *rest):
    """Argmax balanced accuracy, or for a two-class task with a validation threshold the mean
    of sensitivity and specificity at it."""
    if len(rest) == 3:  # (threshold, counts_bp, patient_n): thresholded on validation
        threshold, counts_bp, patient_n = rest
        recalls_2b = np.stack(clustered_sens_spec(y_n, scores, threshold, counts_bp, patient_n))
        present_b = np.isfinite(recalls_2b).sum(axis=0)  # the mean recall of the classes present, as argmax bacc
        return np.where(present_b > 0, np.nansum(recalls_2b, axis=0) / np.maximum(present_b, 1), np.nan)
    return clustered_bacc(y_n, scores, *rest)


def _spec90(y_n, score_n):
    return specificity_threshold(y_n, score_n, 0.9)


# Registration order is the order of the wide tables' blocks.
register_metric(Metric("auc", "AUC", "AUC", clustered_auc, in_figures=True, chance=lambda task: 0.5))
register_metric(Metric("bacc", "Balanced accuracy", "balanced accuracy", _balanced_accuracy,
                       binary_threshold=youden_threshold, in_figures=True, chance=lambda task: 1 / task.n_classes))
register_metric(Metric("auc_breast", "AUC (breast level)", "AUC, breast level", clustered_auc, units="breast"))
register_metric(Metric("pf1_breast", "Probabilistic F1 (breast level)", "pF1, breast level", clustered_pf1,
                       units="breast", binary=True))
for suffix, units, image_only in (("", "image", True), ("_breast", "breast", False)):
    level = " (breast level)" if units == "breast" else ""
    register_metric(Metric(f"sens{suffix}", f"Sensitivity{level}, Youden threshold chosen on validation",
                           f"sensitivity{level}", _sensitivity, units=units, image_tasks_only=image_only,
                           threshold=youden_threshold))
    register_metric(Metric(f"spec{suffix}", f"Specificity{level}, Youden threshold chosen on validation",
                           f"specificity{level}", _specificity, units=units, image_tasks_only=image_only,
                           threshold=youden_threshold))
    register_metric(Metric(f"sens_spec90{suffix}", f"Sensitivity{level} at 90 % specificity on validation",
                           f"sensitivity at 90 % specificity{level}", _sensitivity, units=units,
                           image_tasks_only=image_only, threshold=_spec90))


def figure_metrics() -> list[Metric]:
    return [m for m in METRICS.values() if m.in_figures]
