"""The tiny text towers the tiny presets start from, as the paper presets start from
pretrained language models (BioMedLM, Bio_ClinicalBERT).

Each tower is one architecture and size; the workflow's ``text_tower`` step pretrains it
once with its own language-model objective on the pretraining split's reports
(``benchmark/text_towers.py``) and writes a Hugging Face model folder, which every method
whose preset names the tower loads as its text ``weights``, through the same code path as
a paper preset's downloaded model. A preset names its tower in ``text.tower``; without the
step's folder (unit tests, ``bench``) the tower is built from its config with random weights.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TowerSpec:
    arch: str  # "bert" or "gpt2"
    config: dict  # Hugging Face config values (sizes); the vocabulary comes from the BPE tokenizer
    # "masked+next_sentence": BERT's two pretraining tasks, as Bio_ClinicalBERT was trained (the
    # next-sentence task is the one that trains [CLS], the feature GLAM and MGCA read);
    # "causal": next-token prediction, as GPT-2 / BioMedLM
    objective: str


# 160 positions: the tiny presets' 144-token context (the paper's MaMA context) plus room.
TOWERS = {
    "bert_tiny": TowerSpec("bert", dict(hidden_size=96, num_hidden_layers=2, num_attention_heads=4,
                                        intermediate_size=384, max_position_embeddings=160), "masked+next_sentence"),
    "gpt2_tiny": TowerSpec("gpt2", dict(n_embd=96, n_layer=2, n_head=4, n_positions=160), "causal"),
}


def tower_text(name: str, context_length: int, **extra) -> dict:
    """A preset's ``text`` entry for tower ``name``: its architecture and config, plus
    ``extra`` (special tokens; config values that change computation only, e.g. eager attention)."""
    spec = TOWERS[name]
    config = dict(spec.config, **extra.pop("config", {}))
    return dict(arch=spec.arch, context_length=context_length, tower=name, config=config, **extra)
