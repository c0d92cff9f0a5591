"""The ``text-tower`` step: pretrain one tiny text tower (``models/text_towers.py``) with its
architecture's own language-model objective on the pretraining split's reports, and write
it as a Hugging Face model folder (config, safetensors weights, tokenizer) that the tiny
presets load as their text ``weights``, as a paper preset loads BioMedLM or Bio_ClinicalBERT.

The corpus is the training split's captions, with and without their metadata sentences (the
texts the BPE tokenizer is trained on); no validation or test text is read. BERT towers
learn BERT's two tasks, as Bio_ClinicalBERT did: fill 15 % of masked tokens (BERT's 80/10/10
rule, transformers' ``DataCollatorForLanguageModeling``) and tell whether the second segment
of ``[SOS] A [EOS] B [EOS]`` continues the first (next-sentence prediction on the pooled
[CLS] state; without it nothing trains [CLS], and its state hardly depends on the caption:
docs/synthetic-data.md). A is a caption's first k sentences; B is the rest of the same caption
or, with probability 1/2, the rest of another caption with as many sentences, cut at the same
k, so the two can be told apart by content only, not by the report's template (a negative
whose tail equals the true one is labelled a continuation). GPT-2 towers predict the next
token of ``[SOS] caption [EOS]``. One loop, AdamW, linear warm-up then cosine.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmark.data.captions import SEP
from benchmark.data.tokenizer import EOS, MASK, PAD, SOS, UNK
from models.text_towers import TOWERS, TowerSpec


@dataclass(frozen=True)
class TowerTraining:
    steps: int  # optimizer steps
    batch_size: int  # captions per step
    lr: float  # peak learning rate (AdamW, weight decay 0.01, 10 % warm-up, cosine to zero)
    seed: int  # initial weights, masking and batch order
    held_out: float = 0.1  # share of the training captions kept out to report the tower's loss on unseen text


def hf_tokenizer(bpe_path: Path, spec: TowerSpec, max_length: int):
    """The project's BPE tokenizer as a Hugging Face fast tokenizer. A BERT tower keeps the
    ``[SOS] text [EOS]`` template (BERT's [CLS] ... [SEP]) and pairs as ``[SOS] A [EOS] B [EOS]``
    with B's token types 1; a GPT-2 tower adds nothing, as GPT-2's tokenizer, and its users
    wrap texts themselves (MaMA: bos + text + eos)."""
    from tokenizers import Tokenizer, processors
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer.from_file(str(bpe_path))
    if spec.arch == "gpt2":
        bpe.post_processor = processors.TemplateProcessing(single="$A", pair="$A $B", special_tokens=[])
    else:  # the single template restates the project tokenizer's (benchmark/data/tokenizer.py); pairs are new
        special = [(t, bpe.token_to_id(t)) for t in (SOS, EOS)]
        bpe.post_processor = processors.TemplateProcessing(single=f"{SOS} $A {EOS}", pair=f"{SOS} $A {EOS} $B:1 {EOS}:1",
                                                           special_tokens=special)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token=PAD, unk_token=UNK, bos_token=SOS,
                                   eos_token=EOS, mask_token=MASK, model_max_length=max_length)


def build_language_model(spec: TowerSpec, tokenizer):
    from transformers import BertConfig, BertForPreTraining, GPT2Config, GPT2LMHeadModel

    ids = dict(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
               bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    if spec.arch == "bert":
        return BertForPreTraining(BertConfig(**spec.config, **ids))
    return GPT2LMHeadModel(GPT2Config(**spec.config, **ids))


class SentencePairs:
    """Next-sentence pairs drawn from a corpus of captions (sentences end in the separator)."""

    def __init__(self, texts: list[str]):
        self.sentences = [[f"{s.strip()} {SEP}" for s in text.split(SEP) if s.strip()] for text in texts]
        self.by_length: dict[int, list[int]] = {}  # captions with as many sentences: a negative's candidates
        for i, sentences in enumerate(self.sentences):
            self.by_length.setdefault(len(sentences), []).append(i)

    def __call__(self, index: list[int], generator: torch.Generator) -> tuple[list[str], list[str], list[int]]:
        """(firsts, seconds, labels) for the captions ``index``: label 0 where the second
        segment continues the first, 1 where it does not (BERT's convention)."""
        firsts, seconds, labels = [], [], []
        for i in index:
            sentences = self.sentences[i]
            cut = int(torch.randint(1, max(2, len(sentences)), (1,), generator=generator))
            tail = " ".join(sentences[cut:])
            if torch.rand((), generator=generator) < 0.5:
                peers = self.by_length[len(sentences)]
                other = peers[int(torch.randint(len(peers), (1,), generator=generator))]
                second = " ".join(self.sentences[other][cut:])
            else:
                second = tail
            firsts.append(" ".join(sentences[:cut]))
            seconds.append(second)
            labels.append(int(second != tail))
        return firsts, seconds, labels


def _lr(step: int, total: int, peak: float) -> float:
    warmup = max(1, total // 10)
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def pretrain_text_tower(name: str, texts: list[str], bpe_path: Path, settings: TowerTraining, out_dir: Path) -> dict:
    """Train tower ``name`` on ``texts``; write the model folder and ``tower.json`` (the loss
    curve, the held-out language-model loss before and after and, for BERT, the held-out
    next-sentence loss before and after) to ``out_dir``; returns that summary."""
    import torch.nn.functional as F
    from transformers import DataCollatorForLanguageModeling

    spec = TOWERS[name]
    max_length = spec.config.get("max_position_embeddings") or spec.config["n_positions"]
    tokenizer = hf_tokenizer(bpe_path, spec, max_length)
    torch.manual_seed(settings.seed)
    model = build_language_model(spec, tokenizer)
    bert = spec.arch == "bert"
    if not bert:
        texts = [f"{SOS}{t}{EOS}" for t in texts]
    order = torch.randperm(len(texts), generator=torch.Generator().manual_seed(settings.seed)).tolist()
    n_held = max(1, int(settings.held_out * len(texts)))
    held = [texts[i] for i in order[:n_held]]
    train = [texts[i] for i in order[n_held:]]
    collate = DataCollatorForLanguageModeling(tokenizer, mlm=bert, mlm_probability=0.15)
    held_pairs, train_pairs = (SentencePairs(held), SentencePairs(train)) if bert else (None, None)

    def batch(corpus: list[str], pairs: SentencePairs | None, index: list[int], generator: torch.Generator) -> dict:
        if pairs is None:  # GPT-2: the captions themselves
            ids = tokenizer([corpus[i] for i in index], truncation=True, max_length=max_length)["input_ids"]
            return collate([{"input_ids": x} for x in ids])
        firsts, seconds, labels = pairs(index, generator)
        encoded = tokenizer(firsts, seconds, truncation=True, max_length=max_length, return_token_type_ids=True)
        out = collate([{"input_ids": i, "token_type_ids": t}
                       for i, t in zip(encoded["input_ids"], encoded["token_type_ids"])])
        out["next_sentence_label"] = torch.tensor(labels)
        return out

    def held_out() -> tuple[float, float | None, float | None]:
        """On held-out text: the language-model loss and, for BERT, the next-sentence loss and
        its chance level (the entropy of the held-out pairs' labels)."""
        model.eval()
        state = torch.get_rng_state()
        torch.manual_seed(settings.seed + 1)  # the same masks and pairs before and after training
        pairs = torch.Generator().manual_seed(settings.seed + 1)
        lm, nsp, labels_seen = [], [], []
        with torch.no_grad():
            for start in range(0, len(held), 64):
                b = batch(held, held_pairs, list(range(start, min(start + 64, len(held)))), pairs)
                if not bert:
                    lm.append(model(**b).loss.item())
                    continue
                next_sentence, labels = b.pop("next_sentence_label"), b.pop("labels")
                out = model(**b)
                lm.append(F.cross_entropy(out.prediction_logits.flatten(0, 1), labels.flatten()).item())
                nsp.append(F.cross_entropy(out.seq_relationship_logits, next_sentence, reduction="sum").item())
                labels_seen += next_sentence.tolist()
        torch.set_rng_state(state)
        model.train()
        if not bert:
            return float(sum(lm) / len(lm)), None, None
        p = sum(labels_seen) / len(labels_seen)
        entropy = -sum(q * math.log(q) for q in (p, 1 - p) if q > 0)
        return float(sum(lm) / len(lm)), sum(nsp) / len(labels_seen), entropy

    before, nsp_before, nsp_chance = held_out()
    draws = torch.Generator().manual_seed(settings.seed + 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=0.01)
    curve = []
    model.train()
    for step in range(settings.steps):
        for group in optimizer.param_groups:
            group["lr"] = _lr(step, settings.steps, settings.lr)
        index = torch.randint(len(train), (settings.batch_size,), generator=draws).tolist()
        loss = model(**batch(train, train_pairs, index, draws)).loss  # BERT: masked LM + next sentence
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        curve.append(round(loss.item(), 4))
    after, nsp_after, _ = held_out()
    summary = {"tower": name, "arch": spec.arch, "objective": spec.objective, "train_captions": len(train),
               "held_out_captions": len(held), "steps": settings.steps, "batch_size": settings.batch_size,
               "lr": settings.lr, "seed": settings.seed, "chance_loss": round(math.log(len(tokenizer)), 4),
               "held_out_loss_before": round(before, 4), "held_out_loss_after": round(after, 4)}
    if bert:
        summary |= {"next_sentence_chance_loss": round(nsp_chance, 4),
                    "held_out_next_sentence_loss_before": round(nsp_before, 4),
                    "held_out_next_sentence_loss_after": round(nsp_after, 4)}
    summary["train_loss"] = curve
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    base = model.bert if bert else model.transformer  # the encoder the methods use, without the LM heads
    base.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "tower.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary
