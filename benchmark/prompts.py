"""The zero-shot prompts file: ``<dataset>/<task>`` keys, each a mapping from class value
to a list of prompt strings (config/prompts.yaml). Read here, checked before any job."""

from __future__ import annotations

from pathlib import Path

import yaml

from benchmark.errors import BenchmarkError
from benchmark.tasks import Task


def load_prompts(path: Path, task: Task) -> list[list[str]]:
    """Prompts for each class of ``task``; anything unusable is one line naming the file and key."""
    path = Path(path)
    if not path.is_file():
        raise BenchmarkError(f"{path}: prompts file not found (zeroshot.prompts)")
    try:
        prompts = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise BenchmarkError(f"{path}: not a readable YAML file ({str(exc).splitlines()[0]})") from None
    if not isinstance(prompts, dict) or task.key not in prompts:
        raise BenchmarkError(f"{path}: no prompts for task {task.key}")
    by_class = prompts[task.key]
    if not isinstance(by_class, dict):
        raise BenchmarkError(f"{path}: {task.key}: expected class: [prompts, ...], not {type(by_class).__name__}")
    missing = [c for c in task.classes if c not in by_class]
    if missing:
        raise BenchmarkError(f"{path}: {task.key}: no prompts for class(es) {missing}")
    for c in task.classes:
        entry = by_class[c]
        if not isinstance(entry, list) or not entry or not all(isinstance(t, str) and t.strip() for t in entry):
            raise BenchmarkError(f"{path}: {task.key}.{c}: expected a non-empty list of non-empty prompt strings")
    return [list(by_class[c]) for c in task.classes]
