"""Shared fixtures: small synthetic datasets written once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmark.data.synth import write_embed, write_rsna

REPO = Path(__file__).resolve().parents[1]


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
