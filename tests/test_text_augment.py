"""GLAM's caption augmentation (benchmark/data/text_augment.py): each operation does what
the official TextTransform's does, the sentence separators survive every one, and the
official word deletion's flaw (everything after the tenth deletion goes) is not repeated."""

from collections import Counter

import numpy as np
import pandas as pd
import torch

from benchmark.data.captions import SEP, embed_sentences, join_sentences
from benchmark.data.text_augment import TextAugment, delete_words
from tests.conftest import REC

CAPTION = join_sentences(embed_sentences(REC | {"birads": 4, "density": 3, "massshape": "X", "massmargin": "I"}))


def _words(caption: str) -> list[str]:
    return [w for w in caption.split() if w != SEP]


def _sentences(caption: str) -> list[str]:
    return [s.strip() for s in caption.split(SEP)[:-1]]


def test_no_operation_leaves_the_caption_unchanged():
    rng = np.random.default_rng(0)
    assert all(TextAugment()(CAPTION, rng) == CAPTION for _ in range(20))


def test_stop_words_go_and_every_separator_stays():
    out = TextAugment(remove_stop_words_p=1.0)(CAPTION, np.random.default_rng(0))
    assert out.count(SEP) == CAPTION.count(SEP)
    lowered = {w.lower() for w in _words(out)}
    assert {"the", "of", "are", "which", "may"}.isdisjoint(lowered)
    assert {"mammography.", "dense,", "BI-RADS"} <= set(_words(out))  # content words stay


def test_a_swap_exchanges_two_words_and_keeps_the_rest():
    for seed in range(10):
        out = TextAugment(swap_p=1.0)(CAPTION, np.random.default_rng(seed))
        assert Counter(_words(out)) == Counter(_words(CAPTION)) and out.count(SEP) == CAPTION.count(SEP)
        moved = [a != b for a, b in zip(_words(out), _words(CAPTION))]
        assert sum(moved) in (0, 2)  # two positions (or two equal words)


def test_a_sentence_swap_exchanges_two_sentences():
    for seed in range(10):
        out = TextAugment(sentence_swap_p=1.0)(CAPTION, np.random.default_rng(seed))
        assert Counter(_sentences(out)) == Counter(_sentences(CAPTION))
        assert sum(a != b for a, b in zip(_sentences(out), _sentences(CAPTION))) == 2


def test_word_deletion_stops_at_its_cap_and_spares_punctuated_words():
    sentences = [[f"w{i}" for i in range(30)] + ["end."]]
    # every word drawn for deletion: exactly ten go, the other twenty stay (the official
    # RandomWordDeletion would drop all thirty once its count reached ten)
    out = delete_words(sentences, np.random.default_rng(0), word_p=1.0, max_deleted=10)
    assert out == [[f"w{i}" for i in range(10, 30)] + ["end."]]
    short = [["a", "b"], ["c."]]
    assert delete_words(short, np.random.default_rng(0), word_p=1.0, max_deleted=10) == short
    out = TextAugment(delete_p=1.0, delete_word_p=0.5)(CAPTION, np.random.default_rng(1))
    assert 0 < len(_words(CAPTION)) - len(_words(out)) <= 10 and out.count(SEP) == CAPTION.count(SEP)
    assert all(w in _words(out) for w in _words(CAPTION) if any(c in ".,:" for c in w))


def test_an_emptied_sentence_keeps_its_separator():
    out = TextAugment(remove_stop_words_p=1.0)(f"the of {SEP} Dense breast. {SEP}", np.random.default_rng(0))
    assert out == f"{SEP} Dense breast. {SEP}"


def test_glam_pretraining_draws_augmented_captions_reproducibly():
    from benchmark.data.images import Augment
    from benchmark.train import PretrainDataset
    from models.glam import TEXT_AUGMENT

    records = pd.DataFrame([REC | {"exam_id": f"e{i}", "breast_id": f"e{i}_L", "density": 1 + i % 4, "birads": i % 7}
                            for i in range(8)])
    images = torch.zeros(8, 1, 4, 4, dtype=torch.uint8)
    still = Augment(crop=False, hflip=False, vflip=False, jitter=0)
    data = PretrainDataset(records, images, still, 0.0, seed=0, needs=("image", "caption"),
                           text_augment=TextAugment(**TEXT_AUGMENT))
    plain = [join_sentences(embed_sentences(r)) for r in records.to_dict("records")]
    first = [data[(0, i)]["caption"] for i in range(8)]
    assert first == [data[(0, i)]["caption"] for i in range(8)]  # the same draw for the same (epoch, image)
    assert sum(a != b for a, b in zip(first, plain)) >= 4  # most captions are changed
    assert all(c.count(SEP) == 7 for c in first)
