"""Downstream tasks: which manifest column holds the label and what its classes are. Each
dataset declares its tasks in its registry entry (benchmark/datasets/)."""

from __future__ import annotations

from dataclasses import dataclass

from benchmark.errors import BenchmarkError


@dataclass(frozen=True)
class Task:
    dataset: str
    name: str
    column: str  # manifest column with the raw label
    classes: tuple  # raw label values, in class-index order
    class_names: tuple
    breast_level: bool = False  # also report metrics on the mean of a breast's views

    @property
    def key(self) -> str:
        return f"{self.dataset}/{self.name}"

    @property
    def n_classes(self) -> int:
        return len(self.classes)


def all_tasks() -> dict[str, Task]:
    """Every registered dataset's tasks, by key (``embed/density``); benchmark/datasets/."""
    from benchmark.datasets import DATASETS

    return {task.key: task for dataset in DATASETS.values() for task in dataset.tasks}


def __getattr__(name: str):
    if name == "TASKS":  # the registry's tasks, read when asked (benchmark.datasets imports Task from here)
        return all_tasks()
    raise AttributeError(name)


def get_task(dataset: str, name: str) -> Task:
    key = f"{dataset}/{name}"
    tasks = all_tasks()
    if key not in tasks:
        raise BenchmarkError(f"unknown task {key!r} (known: {', '.join(tasks)})")
    return tasks[key]
