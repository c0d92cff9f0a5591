"""Model registry: a decorator, a name, presets (in the spirit of timm's registry).

A method registers its ``torch.nn.Module`` subclass under a name::

    @register_model("clip")
    class Clip(nn.Module):
        presets = {"tiny": {...}, "paper": {...}}

and the framework builds it with ``build_model("clip", "tiny", tokenizer=...)``.
Nothing in ``benchmark/`` names a method; it only goes through this module.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Any

_REGISTRY: dict[str, type] = {}
_LOADED = False


class Registry(dict):
    """Entries by their ``name`` (metrics, protocols, datasets); a name registers once."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def register(self, entry):
        if entry.name in self:
            raise ValueError(f"{self.kind} {entry.name!r} is registered twice")
        self[entry.name] = entry
        return entry


def register_model(name: str) -> Callable[[type], type]:
    """Class decorator that registers a method under ``name``."""

    def wrap(cls: type) -> type:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"model name {name!r} is registered twice")
        if not getattr(cls, "presets", None):
            raise ValueError(f"model {name!r} must define a non-empty `presets` dict")
        cls.registered_name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def _load_model_modules() -> None:
    """Import every module of the ``models`` package so that decorators run."""
    global _LOADED
    if _LOADED:
        return
    import models

    for info in pkgutil.iter_modules(models.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"models.{info.name}")
    _LOADED = True


def available_models() -> list[str]:
    _load_model_modules()
    return sorted(_REGISTRY)


def model_class(name: str) -> type:
    if name not in _REGISTRY:
        try:  # convention: method ``name`` lives in models/<name>.py; import only that file
            importlib.import_module(f"models.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"models.{name}":
                raise
    if name not in _REGISTRY:
        _load_model_modules()
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r} (registered: {', '.join(sorted(_REGISTRY))})")
    return _REGISTRY[name]


def preset_names(name: str) -> list[str]:
    return sorted(model_class(name).presets)


def preset_values(name: str, preset: str) -> dict:
    return dict(model_class(name).presets[preset])


def build_model(name: str, preset: str, **context: Any):
    """Build ``name`` with ``preset``; ``context`` carries run-level inputs (tokenizer path,
    weights) and the config's ``overrides`` of preset values."""
    cls = model_class(name)
    if preset not in cls.presets:
        raise KeyError(f"model {name!r} has no preset {preset!r} (presets: {', '.join(cls.presets)})")
    return cls(**merge_settings(cls.presets[preset], context))


def merge_settings(preset: dict, overrides: dict) -> dict:
    """The preset with ``overrides`` applied; a dict-valued override merges into the preset's
    dict (``train: {batch_size: 16}`` keeps the preset's learning rate), anything else replaces."""
    merged = dict(preset)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_settings(merged[key], value)
        else:
            merged[key] = value
    return merged


def build_on_meta(name: str, preset: str, **context: Any):
    """``build_model`` on the meta device: shapes and parameter counts, nothing allocated or
    loaded; the libraries' notes about a model that will never run are silenced."""
    import logging
    import warnings

    import torch

    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            return build_model(name, preset, **context)
        finally:
            logging.disable(logging.NOTSET)


def describe_models() -> list[str]:
    """A line per registered method with its presets' sizes, built on the meta device (no
    weights are loaded or allocated, so paper presets list instantly)."""
    from benchmark.errors import BenchmarkError

    lines = []
    for name in available_models():
        sizes = []
        for preset in sorted(model_class(name).presets):
            try:
                model = build_on_meta(name, preset)
            except BenchmarkError as exc:
                sizes.append(f"{preset}: ({exc})")
                continue
            total = sum(p.numel() for p in model.parameters())
            trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
            sizes.append(f"{preset}: {total / 1e6:,.1f} M params ({trainable / 1e6:,.1f} M trainable)")
        lines.append(f"{name:10s} {'; '.join(sizes)}")
    return lines
