"""Shared fixtures: small synthetic datasets written once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmark.data.captions import embed_sentences, join_sentences
from benchmark.data.synth import write_embed, write_rsna
from benchmark.data.tokenizer import train_tokenizer

REPO = Path(__file__).resolve().parents[1]
# One EMBED-like record: the fields captions need (tests vary density and BI-RADS).
REC = {"study_description": "MG Screening Bilateral", "reason": "screening", "age": "56", "race": "Asian",
       "ethnicity": "Unreported", "image_type": "2D", "laterality": "L", "view": "CC"}


@pytest.fixture(scope="session")
def embed_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("embed")
    write_embed(root, n_patients=24, seed=3, shape=(128, 104))
    return root


@pytest.fixture(scope="session")
def rsna_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("rsna")
    write_rsna(root, n_patients=20, seed=4, shape=(128, 104))
    return root


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory) -> str:
    """A small BPE tokenizer on reports of every density and BI-RADS value."""
    texts = [join_sentences(embed_sentences(REC | {"density": d, "birads": b, "massshape": "X" if b > 3 else ""}))
             for d in (1, 2, 3, 4) for b in range(7)]
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    train_tokenizer(texts, 400, path)
    return str(path)
