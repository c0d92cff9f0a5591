"""File stems of every figure, shared by the ``figures`` command and the workflow.

Kept free of heavy imports: Snakemake reads it while it parses the rules."""

from __future__ import annotations

FAMILIES = ("label_efficiency", "bars", "roc", "tsne", "alignment", "compute_ledger", "subgroups")


def task_slug(task_key: str) -> str:
    return task_key.replace("/", "_")


def task_datasets(tasks: list[str]) -> list[str]:
    """The datasets the tasks come from, sorted: one t-SNE figure each."""
    return sorted({t.split("/")[0] for t in tasks})


def figure_stems(family: str, tasks: list[str]) -> list[str]:
    """Stems (no extension) that ``family`` writes; each is saved as .png and .pdf."""
    if family in ("label_efficiency", "bars", "roc", "subgroups"):
        return [f"{family}_{task_slug(t)}" for t in tasks]
    if family == "tsne":
        return [f"tsne_{d}" for d in task_datasets(tasks)]
    if family in ("alignment", "compute_ledger"):
        return [family]
    raise ValueError(f"unknown figure family {family!r} (known: {', '.join(FAMILIES)})")
