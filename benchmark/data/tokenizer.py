"""A small BPE tokenizer trained on the training captions (for tiny text encoders)."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

from benchmark.data.captions import SEP
from benchmark.errors import BenchmarkError

PAD, UNK, EOS, SOS, MASK = "[PAD]", "[UNK]", "[EOS]", "[SOS]", "[MASK]"
# ids 0..5: pad 0 and eos 2 as open_clip expects; [MASK] for the BERT tower's masked-LM pretraining
SPECIAL_TOKENS = [PAD, UNK, EOS, SOS, SEP, MASK]


def train_tokenizer(texts: list[str], vocab_size: int, out: Path) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE(unk_token=UNK))
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Digits(True)])
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False)
    tokenizer.train_from_iterator(sorted(set(texts)), trainer=trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{SOS} $A {EOS}", special_tokens=[(SOS, 3), (EOS, 2)])
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out))
    return tokenizer


def load_tokenizer(path: Path, context_length: int) -> Tokenizer:
    if not Path(path).is_file():
        raise BenchmarkError(f"{path}: tokenizer not found (the tokenizer step writes it)")
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # the tokenizers library raises a bare Exception for any bad file
        raise BenchmarkError(f"{path}: not a tokenizer file ({str(exc).splitlines()[0][:120]})") from None
    tokenizer.enable_truncation(context_length)
    tokenizer.enable_padding(pad_id=0, pad_token=PAD, length=context_length)
    return tokenizer
