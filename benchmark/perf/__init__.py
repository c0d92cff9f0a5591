"""Benchmark scripts: each prints ratios against a baseline measured in the same run."""

from benchmark.config import REPO_ROOT

DEFAULT_CONFIG = REPO_ROOT / "config" / "config.yaml"


def default_budget() -> tuple[int, int]:
    """The default run's ``pretrain.samples_seen`` and ``finetune.steps`` (config/config.yaml)."""
    import yaml

    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    return int(config["pretrain"]["samples_seen"]), int(config["finetune"]["steps"])
