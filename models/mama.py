"""MaMA (Du et al. 2024): multi-view, multi-scale alignment. Constants from the official
code (XYPB/MaMA: ``model.py``, ``backbones/encoder_pemed.py``, ``backbones/heads.py``,
``backbones/loss.py``, ``dataset/transforms.py``, ``scripts/pretrain.sh``); the table with
the paper's and this project's values is in docs/protocol.md.

- Image: DINOv2 ViT-B/14 with 4 registers at 518 x 518, fully trained, gradient
  checkpointing. Global feature: mean over all tokens before the final norm
  (``--pool_feat``), linear 768 -> 512; the final norm is frozen (only the local features
  pass through it). Local features: the patch tokens **after** the final norm through
  ``LocalEmbedding`` (1x1 conv 768 -> 2048, batch norm, ReLU, 1x1 conv -> 512, batch norm
  without affine).
- Text: BioMedLM (GPT-2 style) with LoRA (r 8, alpha 32, dropout 0.1, on ``c_attn``); only
  LoRA and the heads train. The tokenizer gets the official special tokens (bos, pad,
  mask, separator, unk, one extra) and the embeddings are resized; captions are wrapped as
  bos + caption + eos and padded to the context length (144). Global: the mean over all
  positions of the last hidden states, padding included (``--pool_txt_feat``), linear
  2560 -> 512; the same pooling for zero-shot (the official code's zero-shot reads a
  padding token instead). ``text_pool: tokens`` (an override) averages the caption's own
  tokens instead. Sentences: the hidden states at the separators through
  ``LocalEmbedding`` 2560 -> 2048 -> 512, applied to each report on its own (its batch
  norm pools one report's sentences, as the official per-report loop does).
- Losses, added as the official forward does (each cross-entropy pair summed):
  CLIP(view 1, caption) [2 terms, learnable scale from 1/0.07, never clamped]; from
  ``late_loss_start_step`` (8000) on also NT-Xent(view 2, view 1) at temperature 0.5
  through ``SimCLRProjectionHead`` (768 -> 768 BN ReLU -> 512 BN, no biases), CLIP(view 2,
  caption) [2 terms] and symmetric local alignment [4 terms] with its own scale.
- View 2: another image of the same exam with probability 0.5, else a second
  augmentation of the same image (supplied by the data pipeline).
- Augmentation (``SimCLRTransform``): random resized crop (scale 0.1 to 1), flips both
  ways, brightness/contrast jitter 0.8 with p 0.8, Gaussian blur (7 x 7, sigma 0.1 to 2)
  with p 0.4. The tiny preset leaves out the jitter (its random ViT, unlike DINOv2, is not
  invariant to it: docs/synthetic-data.md). Images are normalised with DINOv2's (ImageNet) statistics, not the
  official 0.5 (a pretrained backbone sees the statistics it was trained with).
- AdamW (0.9, 0.999), lr 4e-5, weight decay 0.1 on every parameter, 10 % warm-up, cosine.
Not repeated from the official code: per-GPU negatives (gathered here; the trainer's
``gather_negatives: false`` restores them), padding-token zero-shot pooling, checkpoint
choice by a validation loss whose terms change at step 8000 (the last checkpoint is
used), the RSNA test file as validation.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from benchmark.data.captions import SEP
from benchmark.errors import BenchmarkError
from benchmark.registry import register_model
from models.base import DualEncoder
from models.encoders import BatchNormMLP, freeze, masked_mean
from models.losses import ClipLoss, LocalAlignmentLoss, NTXentLoss
from models.text_towers import tower_text

LORA = dict(r=8, lora_alpha=32, lora_dropout=0.1, target_modules=["c_attn"])
# backbones/utils.py get_tokenizer("gpt"): the tokens the official code adds to BioMedLM's
# tokenizer; the separator is spelt as the captions spell it.
SPECIAL_TOKENS = dict(bos_token="<|startoftext|>", pad_token="<|padtext|>", mask_token="<|masktext|>",
                      sep_token=SEP, unk_token="<|unknowntext|>", additional_special_tokens=["<|keytext|>"])
AUGMENT = dict(crop_scale=(0.1, 1.0), hflip=True, vflip=True, jitter=0.8, jitter_p=0.8, blur_p=0.4, blur_kernel=7)
# The tiny preset leaves out the colour jitter: the paper's DINOv2 backbone arrives invariant
# to it (DINOv2 trained with the same jitter), the tiny ViT starts from random weights and
# does not become so within the miniature's budget (docs/synthetic-data.md, measured).
TINY_AUGMENT = dict(AUGMENT, jitter=0.0)


@register_model("mama")
class MaMA(DualEncoder):
    image_text_term = "clip_view1"  # the term pretraining is judged against chance by
    batch_needs = ("image", "view2", "caption")
    presets = {
        "tiny": dict(image_size=96, embed_dim=128, local_hidden=256, late_loss_start_step=16,
                     grad_checkpointing=False, text_pool="all_positions",
                     image=dict(name="vit_tiny_reg", kwargs=dict(width=192, depth=4, heads=3, patch_size=16)),
                     # a tiny GPT-2 pretrained by the workflow as a causal LM, as BioMedLM (frozen, LoRA)
                     text=tower_text("gpt2_tiny", 144, special_tokens=SPECIAL_TOKENS),
                     train=dict(batch_size=48, lr=3e-4, weight_decay=0.1, betas=(0.9, 0.999),
                                warmup_fraction=0.1, no_weight_decay="none"),
                     augment=TINY_AUGMENT),
        "paper": dict(image_size=518, embed_dim=512, local_hidden=2048, late_loss_start_step=8000,
                      grad_checkpointing=True, text_pool="all_positions", image=dict(name="vit_base_patch14_reg4_dinov2"),
                      text=dict(arch="gpt2", context_length=144, special_tokens=SPECIAL_TOKENS,
                                config=dict(n_embd=2560, n_layer=32, n_head=20, n_positions=1024,
                                            vocab_size=28896)),
                      train=dict(batch_size=288, lr=4e-5, weight_decay=0.1, betas=(0.9, 0.999),
                                 warmup_fraction=0.1, no_weight_decay="none"),
                      augment=AUGMENT),
    }

    def __init__(self, *, local_hidden: int, late_loss_start_step: int, grad_checkpointing: bool,
                 text_pool: str, **kwargs):
        """``text_pool``: ``all_positions`` (official: the mean over every position of the
        padded caption) or ``tokens`` (the mean over the caption's own tokens; an option,
        since a short prompt's mean over 144 positions is mostly padding)."""
        super().__init__(**kwargs)
        if text_pool not in ("all_positions", "tokens"):
            raise BenchmarkError(f"mama: text_pool {text_pool!r} is not 'all_positions' or 'tokens'")
        self.text_pool = text_pool
        from peft import LoraConfig, get_peft_model

        self.text.model = get_peft_model(self.text.model, LoraConfig(**LORA))  # freezes the base model
        width, text_width, dim = self.feature_dim, self.text.width, self.embed_dim
        self.image_head = nn.Linear(width, dim)
        self.local_head = BatchNormMLP(width, local_hidden, dim)
        self.ntxent_head = BatchNormMLP(width, width, dim, bias=False, out_affine=True)
        self.text_head = nn.Linear(text_width, dim)
        self.sentence_head = BatchNormMLP(text_width, local_hidden, dim)
        self.sla_logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        freeze(self.visual.norm)  # official --pool_feat: the global feature skips it
        self.late_loss_start_step = late_loss_start_step
        self.grad_checkpointing = grad_checkpointing
        self.clip_loss, self.sla = ClipLoss(sum_directions=True), LocalAlignmentLoss()
        self.ntxent = NTXentLoss(temperature=0.5)
        self.sep_id = self.text.token_id(SEP)
        if self.sep_id is None and (self.text.bpe is not None or self.text.hf_tokenizer is not None):
            raise BenchmarkError(f"mama: the text tokenizer has no separator token {SEP!r}; the sentence "
                                 "features need one (give the text preset's special_tokens a sep_token)")

    def _tokens(self, images: torch.Tensor) -> torch.Tensor:
        """All tokens after the last block, before the final norm."""
        v = self.visual
        x = v.norm_pre(v.patch_drop(v._pos_embed(v.patch_embed(images))))
        for block in v.blocks:
            x = checkpoint(block, x, use_reentrant=False) if self.grad_checkpointing and self.training else block(x)
        return x

    def _patches(self, tokens_nld: torch.Tensor) -> torch.Tensor:
        """Local features: the normed patch tokens (registers and [CLS] left out), projected."""
        normed = self.visual.norm(tokens_nld)[:, self.visual.num_prefix_tokens:]
        return F.normalize(self.local_head(normed), dim=-1)

    def image_features(self, images):
        return self._tokens(images).mean(dim=1)

    def project_text(self, hidden_ntd, mask_nt):
        if self.text_pool == "tokens":
            return self.text_head(masked_mean(hidden_ntd, mask_nt))
        return self.text_head(hidden_ntd.mean(dim=1))  # every position, padding included (official)

    def _sentences(self, hidden_ntd, ids_nt):
        """Sentence features at the separator tokens, each report through the sentence head
        on its own, padded to the longest report; (N, S, D) and the (N, S) mask."""
        is_sep_nt = ids_nt == self.sep_id
        n_sent = int(is_sep_nt.sum(1).max().clamp(min=1))
        sent_nsd = hidden_ntd.new_zeros(hidden_ntd.shape[0], n_sent, self.embed_dim)
        mask_ns = hidden_ntd.new_zeros(hidden_ntd.shape[0], n_sent)
        for i in range(hidden_ntd.shape[0]):
            found = hidden_ntd[i, is_sep_nt[i]]
            if len(found):
                sent_nsd[i, :len(found)] = F.normalize(self.sentence_head(found), dim=-1)
                mask_ns[i, :len(found)] = 1
        return sent_nsd, mask_ns

    def sentence_patch_similarity(self, images: torch.Tensor, captions: list[str]):
        """Optional contract method (the alignment figure): the cosine similarity of each
        report sentence with each patch, as the local alignment loss sees them.

        Returns ((N, S, H', W') similarity on the patch grid, (N, S) sentence mask); sentence
        s is the text before the caption's (s+1)-th separator."""
        patches_npd = self._patches(self._tokens(images))
        out, ids, _ = self.text(captions)
        sentences_nsd, mask_ns = self._sentences(out.last_hidden_state, ids)
        grid = self.image_size // self.visual.patch_embed.patch_size[0]
        sim_nsp = torch.einsum("npd,nsd->nsp", patches_npd, sentences_nsd)
        return sim_nsp.reshape(*sim_nsp.shape[:2], grid, grid), mask_ns

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        super().set_grad_checkpointing(enable)
        self.grad_checkpointing = enable  # _tokens runs the blocks itself

    def training_loss(self, batch: dict) -> dict:
        tokens1 = self._tokens(batch["image"])
        global1 = tokens1.mean(dim=1)
        image1 = F.normalize(self.image_head(global1), dim=-1)
        out, ids, mask = self.text(batch["caption"])
        text_nd = F.normalize(self.project_text(out.last_hidden_state, mask), dim=-1)
        scale = self.logit_scale.exp()
        terms = {"clip_view1": self.clip_loss(image1, text_nd, scale)}
        if batch.get("step", 0) >= self.late_loss_start_step:
            tokens2 = self._tokens(batch["view2"])
            global2 = tokens2.mean(dim=1)
            image2 = F.normalize(self.image_head(global2), dim=-1)
            terms["ntxent"] = self.ntxent(F.normalize(self.ntxent_head(global2), dim=-1),
                                          F.normalize(self.ntxent_head(global1), dim=-1))
            terms["clip_view2"] = self.clip_loss(image2, text_nd, scale)
            sentences, sentence_mask = self._sentences(out.last_hidden_state, ids)
            terms["sla"] = self.sla(self._patches(tokens1), sentences, sentence_mask, self.sla_logit_scale.exp())
        loss = sum(terms.values())
        return {"loss": loss, **{k: v.detach() for k, v in terms.items()}}

    def chance_losses(self, candidates: int) -> dict[str, float]:
        clip = self.clip_loss.chance(candidates)
        return {"clip_view1": clip, "clip_view2": clip, "ntxent": self.ntxent.chance(candidates),
                "sla": self.sla.chance(candidates)}
