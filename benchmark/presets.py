"""Typed settings shared by the methods' presets (in the spirit of open_clip's
``CLIPVisionCfg``: a dataclass, a comment per field). A preset's ``train`` entry is read
into ``TrainSettings``, and a dual encoder's ``image`` and ``text`` entries into
``ImageTower`` and ``TextTower`` (a model class lists them in ``preset_types``), when a
config is checked (with its ``overrides`` merged in) and again when the model is built, so
a misspelt or mistyped setting stops before any job with one line. The augmentations have
their own typed settings, ``benchmark.data.images.Augment``; CLIP's towers are open_clip's
own ``CLIPVisionCfg`` and ``CLIPTextCfg``. Method-specific constructor arguments (MaMA's
``late_loss_start_step``, MGCA's prototypes, ...) are typed in each model's ``__init__``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from benchmark.errors import BenchmarkError


@dataclass(frozen=True)
class TrainSettings:
    batch_size: int  # global batch (capped by the data; a multiple of processes x grad_accum)
    lr: float  # peak learning rate, reached after the linear warm-up
    weight_decay: float  # decoupled (AdamW) or L2 (Adam) decay of the parameters the rule below keeps
    warmup_fraction: float = 0.1  # share of the budget spent warming up linearly, then cosine to zero
    betas: tuple[float, float] = (0.9, 0.98)  # Adam's moment decay rates
    eps: float = 1e-8  # Adam's epsilon
    optimizer: str = "adamw"  # "adamw" or "adam"
    # Parameters without weight decay: "1d" (biases and norms), "none" (decay on every
    # parameter, as the official MaMA and MGCA code), or a list of parameter-name parts.
    no_weight_decay: str | list[str] = "1d"
    grad_clip_norm: float | None = None  # clip the global gradient norm to this (None: no clipping)

    @classmethod
    def from_preset(cls, train: dict, where: str) -> TrainSettings:
        """Read a preset's ``train`` mapping; unknown or mistyped keys are one line naming ``where``."""
        settings = _read_typed(cls, train, where, _CHECKS, noun="a training setting")
        return dataclasses.replace(settings, betas=tuple(settings.betas))


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# field: (check, what the check wants, in words)
_CHECKS = {
    "batch_size": (lambda v: _number(v) and v == int(v) and v >= 1, "a whole number of at least 1"),
    "lr": (lambda v: _number(v) and v > 0, "a positive number"),
    "weight_decay": (lambda v: _number(v) and v >= 0, "a number >= 0"),
    "warmup_fraction": (lambda v: _number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "betas": (lambda v: isinstance(v, (list, tuple)) and len(v) == 2 and all(_number(b) and 0 <= b < 1 for b in v),
              "two numbers in [0, 1)"),
    "eps": (lambda v: _number(v) and v > 0, "a positive number"),
    "optimizer": (lambda v: v in ("adamw", "adam"), "'adamw' or 'adam'"),
    "no_weight_decay": (lambda v: v in ("1d", "none") or (isinstance(v, list) and all(isinstance(n, str) for n in v)),
                        "'1d', 'none' or a list of names"),
    "grad_clip_norm": (lambda v: v is None or (_number(v) and v > 0), "a positive number or null"),
}


def _read_typed(cls, values: dict, where: str, checks: dict, noun: str = "a setting"):
    """``cls(**values)`` after one-line errors for unknown, missing and mistyped keys."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise BenchmarkError(f"{where}: {', '.join(unknown)} not {noun} (settings: {', '.join(fields)})")
    missing = [n for n, f in fields.items()
               if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and n not in values]
    if missing:
        raise BenchmarkError(f"{where}: missing {', '.join(missing)}")
    for name, value in values.items():
        fits, expected = checks[name]
        if not fits(value):
            raise BenchmarkError(f"{where}.{name}: {value!r} is not {expected}")
    return cls(**values)


def _three_numbers(v) -> bool:
    return v is None or (isinstance(v, (list, tuple)) and len(v) == 3 and all(_number(x) for x in v))


@dataclass(frozen=True)
class ImageTower:
    """A dual encoder's image backbone (``models/base.py``, ``models/encoders.py``)."""

    name: str  # a timm model name, or vit_tiny / vit_tiny_reg / resnet_tiny (models/encoders.py)
    kwargs: dict = dataclasses.field(default_factory=dict)  # to the backbone's constructor (width, depth, ...)
    # normalisation statistics; None: the backbone's pretrained_cfg, else 0.5 (from-scratch tiny backbones)
    mean: tuple | None = None
    std: tuple | None = None

    @classmethod
    def from_preset(cls, image: dict, where: str) -> ImageTower:
        return _read_typed(cls, image, where, {
            "name": (lambda v: isinstance(v, str) and v != "", "a backbone name"),
            "kwargs": (lambda v: isinstance(v, dict), "a mapping"),
            "mean": (_three_numbers, "three numbers or null"),
            "std": (_three_numbers, "three numbers or null"),
        })


@dataclass(frozen=True)
class TextTower:
    """A dual encoder's text encoder (``models/encoders.TextEncoder``)."""

    arch: str  # "bert" or "gpt2": the Hugging Face architecture
    context_length: int  # tokens per caption, padding included
    config: dict | None = None  # Hugging Face config values (the tiny presets' sizes, attn_implementation)
    # tokens added to the tokenizer, as Hugging Face's add_special_tokens takes them (MaMA's markers)
    special_tokens: dict | None = None
    # a tiny tower the workflow pretrains with a language-model objective (models/text_towers.py):
    # its folder becomes the text weights; None: the weights come from `weights` or start random
    tower: str | None = None
    # keep only the first k transformer layers of the encoder, pretrained or not (GLAM: 6 of
    # Bio_ClinicalBERT's 12, as its official bert_config.json); None: all of them
    layers: int | None = None

    @classmethod
    def from_preset(cls, text: dict, where: str) -> TextTower:
        return _read_typed(cls, text, where, {
            "arch": (lambda v: v in ("bert", "gpt2"), "'bert' or 'gpt2'"),
            "context_length": (lambda v: _number(v) and v == int(v) and v >= 2, "a whole number of at least 2"),
            "config": (lambda v: v is None or isinstance(v, dict), "a mapping or null"),
            "special_tokens": (lambda v: v is None or isinstance(v, dict), "a mapping or null"),
            "tower": (lambda v: v is None or v in _tower_names(), f"one of {', '.join(_tower_names())} or null"),
            "layers": (lambda v: v is None or (_number(v) and v == int(v) and v >= 1), "a whole number of at least 1 or null"),
        })


def _tower_names() -> list[str]:
    from models.text_towers import TOWERS

    return sorted(TOWERS)
