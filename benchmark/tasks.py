"""Downstream tasks: which manifest column holds the label and what its classes are."""

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


TASKS: dict[str, Task] = {
    t.key: t
    for t in [
        Task("embed", "density", "density", (1, 2, 3, 4),
             ("almost entirely fatty", "scattered fibroglandular", "heterogeneously dense", "extremely dense")),
        Task("embed", "birads", "birads", (0, 1, 2, 3, 4, 5, 6),
             ("0 incomplete", "1 negative", "2 benign", "3 probably benign", "4 suspicious",
              "5 highly suggestive of malignancy", "6 known malignancy")),
        Task("rsna", "cancer", "cancer", (0, 1), ("no cancer", "cancer"), breast_level=True),
    ]
}


def get_task(dataset: str, name: str) -> Task:
    key = f"{dataset}/{name}"
    if key not in TASKS:
        raise BenchmarkError(f"unknown task {key!r} (known: {', '.join(TASKS)})")
    return TASKS[key]
