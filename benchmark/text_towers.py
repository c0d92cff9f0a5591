"""The ``text-tower`` step: pretrain one tiny text tower (``models/text_towers.py``) with its
architecture's own language-model objective on the pretraining split's reports, and write
it as a Hugging Face model folder (config, safetensors weights, tokenizer) that the tiny
presets load as their text ``weights``, as a paper preset loads BioMedLM or Bio_ClinicalBERT.

The corpus is the training split's captions, with and without their metadata sentences (the
texts the BPE tokenizer is trained on); no validation or test text is read. BERT towers
learn to fill 15 % of masked tokens (BERT's 80/10/10 rule, transformers'
``DataCollatorForLanguageModeling``); GPT-2 towers predict the next token of
``[SOS] caption [EOS]``. One loop, AdamW, linear warm-up then cosine.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

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
    ``[SOS] text [EOS]`` template (BERT's [CLS] ... [SEP]); a GPT-2 tower adds nothing, as
    GPT-2's tokenizer, and its users wrap texts themselves (MaMA: bos + text + eos)."""
    from tokenizers import Tokenizer, processors
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer.from_file(str(bpe_path))
    if spec.arch == "gpt2":
        bpe.post_processor = processors.TemplateProcessing(single="$A", pair="$A $B", special_tokens=[])
    return PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token=PAD, unk_token=UNK, bos_token=SOS,
                                   eos_token=EOS, mask_token=MASK, model_max_length=max_length)


def build_language_model(spec: TowerSpec, tokenizer):
    from transformers import BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel

    ids = dict(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
               bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    if spec.arch == "bert":
        return BertForMaskedLM(BertConfig(**spec.config, **ids))
    return GPT2LMHeadModel(GPT2Config(**spec.config, **ids))


def _lr(step: int, total: int, peak: float) -> float:
    warmup = max(1, total // 10)
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def pretrain_text_tower(name: str, texts: list[str], bpe_path: Path, settings: TowerTraining, out_dir: Path) -> dict:
    """Train tower ``name`` on ``texts``; write the model folder and ``tower.json`` (the loss
    curve, the held-out loss before and after) to ``out_dir``; returns that summary."""
    from transformers import DataCollatorForLanguageModeling

    spec = TOWERS[name]
    max_length = spec.config.get("max_position_embeddings") or spec.config["n_positions"]
    tokenizer = hf_tokenizer(bpe_path, spec, max_length)
    torch.manual_seed(settings.seed)
    model = build_language_model(spec, tokenizer)
    if spec.arch == "gpt2":
        texts = [f"{SOS}{t}{EOS}" for t in texts]
    encoded = [{"input_ids": ids} for ids in tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]]
    order = torch.randperm(len(encoded), generator=torch.Generator().manual_seed(settings.seed)).tolist()
    n_held = max(1, int(settings.held_out * len(encoded)))
    held = [encoded[i] for i in order[:n_held]]
    train = [encoded[i] for i in order[n_held:]]
    collate = DataCollatorForLanguageModeling(tokenizer, mlm=spec.objective == "masked", mlm_probability=0.15)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=0.01)

    def held_out_loss() -> float:
        model.eval()
        state = torch.get_rng_state()
        torch.manual_seed(settings.seed + 1)  # the same masks before and after training
        with torch.no_grad():
            losses = [model(**collate(held[i:i + 64])).loss.item() for i in range(0, len(held), 64)]
        torch.set_rng_state(state)
        model.train()
        return float(sum(losses) / len(losses))

    before = held_out_loss()
    batches = torch.Generator().manual_seed(settings.seed + 2)
    curve = []
    model.train()
    for step in range(settings.steps):
        for group in optimizer.param_groups:
            group["lr"] = _lr(step, settings.steps, settings.lr)
        index = torch.randint(len(train), (settings.batch_size,), generator=batches).tolist()
        loss = model(**collate([train[i] for i in index])).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        curve.append(round(loss.item(), 4))
    summary = {"tower": name, "arch": spec.arch, "objective": spec.objective, "train_captions": len(train),
               "held_out_captions": len(held), "steps": settings.steps, "batch_size": settings.batch_size,
               "lr": settings.lr, "seed": settings.seed, "chance_loss": round(math.log(len(tokenizer)), 4),
               "held_out_loss_before": round(before, 4), "held_out_loss_after": round(held_out_loss(), 4),
               "train_loss": curve}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    base = model.bert if spec.arch == "bert" else model.transformer  # the encoder the methods use, without the LM head
    base.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "tower.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary
