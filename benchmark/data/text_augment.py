"""Caption augmentation during pretraining, for the methods whose official code augments
text (GLAM's ``TextTransform`` with ``--aug_text --heavy_aug``; docs/protocol.md, GLAM).

Each operation runs with its own probability, in the official order, on the caption's
words; the ``[SEP]`` separators that end each sentence are never removed or moved, so a
method that reads sentence features still finds them. Two of the official operations are
not available here and are left out (docs/protocol.md says so): WordNet synonym
replacement (NLTK's WordNet corpus is a separate download) and back-translation (it calls
Google Translate or four translation models). The stop-word list is scikit-learn's
English list, which ships with the library (the official code uses NLTK's, another
download).
"""

from __future__ import annotations

import string
from dataclasses import dataclass

import numpy as np
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

from benchmark.data.captions import SEP


@dataclass(frozen=True)
class TextAugment:
    """Probabilities of each operation (0 leaves it out) and the word deletion's settings."""

    remove_stop_words_p: float = 0.0  # drop every stop word of the caption
    swap_p: float = 0.0  # swap two random words (EDA's random swap, one swap)
    delete_p: float = 0.0  # delete words at random (``delete_word_p`` each, at most ``delete_max``)
    sentence_swap_p: float = 0.0  # swap two random sentences (one swap)
    delete_word_p: float = 0.1  # each word's chance of deletion, when the deletion runs
    delete_max: int = 10  # at most this many words deleted; captions of fewer words are left whole

    def __call__(self, caption: str, rng: np.random.Generator) -> str:
        parts = caption.split(SEP)
        sentences = [s.split() for s in (parts[:-1] if not parts[-1].strip() else parts)]
        if self.remove_stop_words_p and rng.random() < self.remove_stop_words_p:
            sentences = [[w for w in words if w.lower() not in ENGLISH_STOP_WORDS] for words in sentences]
        if self.swap_p and rng.random() < self.swap_p:
            sentences = swap_two_words(sentences, rng)
        if self.delete_p and rng.random() < self.delete_p:
            sentences = delete_words(sentences, rng, self.delete_word_p, self.delete_max)
        if self.sentence_swap_p and rng.random() < self.sentence_swap_p and len(sentences) > 1:
            a, b = rng.choice(len(sentences), size=2, replace=False)
            sentences[a], sentences[b] = sentences[b], sentences[a]
        return " ".join(" ".join([*words, SEP]) for words in sentences)


def swap_two_words(sentences: list[list[str]], rng: np.random.Generator) -> list[list[str]]:
    """Two word positions of the whole caption, drawn at random, exchange their words."""
    positions = [(s, w) for s, words in enumerate(sentences) for w in range(len(words))]
    if len(positions) < 2:
        return sentences
    out = [list(words) for words in sentences]
    (s1, w1), (s2, w2) = (positions[k] for k in rng.choice(len(positions), size=2, replace=False))
    out[s1][w1], out[s2][w2] = sentences[s2][w2], sentences[s1][w1]
    return out


def delete_words(sentences: list[list[str]], rng: np.random.Generator, word_p: float,
                 max_deleted: int) -> list[list[str]]:
    """Each word without punctuation deleted with probability ``word_p``, at most
    ``max_deleted`` in all; a caption of ``max_deleted`` words or fewer is left whole.

    The official ``RandomWordDeletion`` also deletes every word after the cap is reached
    (its keep condition is ``random() > p and count < max``): a caption that reaches ten
    deletions loses the rest of its unpunctuated words. Not repeated: here the cap stops
    the deletions (docs/protocol.md, GLAM)."""
    if sum(len(words) for words in sentences) <= max_deleted:
        return sentences
    deleted, out = 0, []
    for words in sentences:
        kept = []
        for word in words:
            protected = any(c in string.punctuation for c in word)
            if not protected and deleted < max_deleted and rng.random() < word_p:
                deleted += 1
            else:
                kept.append(word)
        out.append(kept)
    return out
