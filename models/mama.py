"""MaMA (Du et al. 2024): multi-view, multi-scale alignment (METHODS.md section 3).

- Image: DINOv2 ViT-B/14 with 4 registers at 518 x 518, fully trained, gradient
  checkpointing. Global feature: mean over all tokens before the final norm, linear to
  512. Local features: patch tokens through an MLP 768 -> 2048 -> 512.
- Text: BioMedLM (GPT-2 style) with LoRA (r 8, alpha 32, dropout 0.1) on the attention
  projection; only LoRA and the projections train. Global: mean-pooled hidden states
  -> 512 (the same pooling for zero-shot, unlike the official code's padding token);
  sentences: hidden states at the separator tokens -> MLP -> 512.
- Losses, weight 1 each: CLIP(view 1, caption); from ``late_loss_start_step`` on also
  NT-Xent(view 1, view 2) at temperature 0.5 through an MLP head, CLIP(view 2, caption)
  and symmetric local alignment both ways with its own logit scale.
- View 2: another image of the same exam with probability 0.5, else a second
  augmentation of the same image (supplied by the data pipeline).
Not repeated from the official code: per-GPU negatives, padding-token zero-shot pooling,
checkpoint choice by a validation loss whose terms change at step 8000 (the benchmark
uses the last checkpoint), the RSNA test file as validation.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from benchmark.data.captions import SEP
from benchmark.registry import register_model
from models.base import DualEncoder
from models.encoders import masked_mean, mlp
from models.gather import gather_padded, gather_rows
from models.losses import ClipLoss, LocalAlignmentLoss, NTXentLoss

LORA = dict(r=8, lora_alpha=32, lora_dropout=0.1, target_modules=["c_attn"])


@register_model("mama")
class MaMA(DualEncoder):
    batch_needs = ("image", "view2", "caption")
    presets = {
        "tiny": dict(image_size=96, embed_dim=128, local_hidden=256, late_loss_start_step=40,
                     grad_checkpointing=False,
                     image=dict(name="vit_tiny_reg", kwargs=dict(width=192, depth=4, heads=3, patch_size=16)),
                     text=dict(arch="gpt2", context_length=112,
                               config=dict(n_embd=96, n_layer=2, n_head=4, n_positions=128)),
                     train=dict(batch_size=48, lr=3e-4, weight_decay=0.1, betas=(0.9, 0.999),
                                warmup_fraction=0.1),
                     augment=dict(crop_scale=(0.3, 1.0), jitter=0.4)),
        "paper": dict(image_size=518, embed_dim=512, local_hidden=2048, late_loss_start_step=8000,
                      grad_checkpointing=True, image=dict(name="vit_base_patch14_reg4_dinov2"),
                      text=dict(arch="gpt2", context_length=144,
                                config=dict(n_embd=2560, n_layer=32, n_head=20, n_positions=1024,
                                            vocab_size=28896)),
                      train=dict(batch_size=288, lr=4e-5, weight_decay=0.1, betas=(0.9, 0.999),
                                 warmup_fraction=0.1),
                      augment=dict(crop_scale=(0.1, 1.0), jitter=0.8)),
    }

    def __init__(self, *, local_hidden: int, late_loss_start_step: int, grad_checkpointing: bool, **kwargs):
        super().__init__(**kwargs)
        from peft import LoraConfig, get_peft_model

        self.text.model = get_peft_model(self.text.model, LoraConfig(**LORA))  # freezes the base model
        width, text_width, dim = self.feature_dim, self.text.width, self.embed_dim
        self.image_head = nn.Linear(width, dim)
        self.local_head = mlp(width, local_hidden, dim)
        self.ntxent_head = mlp(width, width, dim)
        self.text_head = nn.Linear(text_width, dim)
        self.sentence_head = mlp(text_width, text_width, dim)
        self.sla_logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.late_loss_start_step = late_loss_start_step
        self.grad_checkpointing = grad_checkpointing
        self.clip_loss, self.ntxent, self.sla = ClipLoss(), NTXentLoss(temperature=0.5), LocalAlignmentLoss()
        self.sep_id = self.text.token_id(SEP)

    def _tokens(self, images: torch.Tensor) -> torch.Tensor:
        """All tokens after the last block, before the final norm."""
        v = self.visual
        x = v.norm_pre(v.patch_drop(v._pos_embed(v.patch_embed(images))))
        for block in v.blocks:
            x = checkpoint(block, x, use_reentrant=False) if self.grad_checkpointing and self.training else block(x)
        return x

    def image_features(self, images):
        return self._tokens(images).mean(dim=1)

    def project_text(self, hidden_ntd, mask_nt):
        return self.text_head(masked_mean(hidden_ntd, mask_nt))

    def _sentences(self, hidden_ntd, ids_nt):
        """Sentence features at the separator tokens, padded to the longest report."""
        is_sep_nt = ids_nt == self.sep_id
        n_sent = int(is_sep_nt.sum(1).max().clamp(min=1))
        sent_nsd = hidden_ntd.new_zeros(hidden_ntd.shape[0], n_sent, hidden_ntd.shape[-1])
        mask_ns = hidden_ntd.new_zeros(hidden_ntd.shape[0], n_sent)
        rows, cols = is_sep_nt.nonzero(as_tuple=True)
        order = torch.cumsum(is_sep_nt.long(), dim=1)[rows, cols] - 1
        sent_nsd[rows, order] = hidden_ntd[rows, cols]
        mask_ns[rows, order] = 1
        return F.normalize(self.sentence_head(sent_nsd), dim=-1), mask_ns

    def sentence_patch_similarity(self, images: torch.Tensor, captions: list[str]):
        """Optional contract method (the alignment figure): the cosine similarity of each
        report sentence with each patch, as the local alignment loss sees them.

        Returns ((N, S, H', W') similarity on the patch grid, (N, S) sentence mask); sentence
        s is the text before the caption's (s+1)-th separator."""
        tokens = self._tokens(images)
        patches_npd = F.normalize(self.local_head(tokens[:, self.visual.num_prefix_tokens:]), dim=-1)
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
        image1 = gather_rows(F.normalize(self.image_head(global1), dim=-1))
        out, ids, mask = self.text(batch["caption"])
        text_nd = gather_rows(F.normalize(self.project_text(out.last_hidden_state, mask), dim=-1))
        clip1 = self.clip_loss(image1, text_nd, self.logit_scale)
        terms = {"clip_view1": clip1}
        if batch.get("step", 0) >= self.late_loss_start_step:
            tokens2 = self._tokens(batch["view2"])
            global2 = tokens2.mean(dim=1)
            image2 = gather_rows(F.normalize(self.image_head(global2), dim=-1))
            terms["ntxent"] = self.ntxent(gather_rows(F.normalize(self.ntxent_head(global1), dim=-1)),
                                          gather_rows(F.normalize(self.ntxent_head(global2), dim=-1)))
            terms["clip_view2"] = self.clip_loss(image2, text_nd, self.logit_scale)
            patches = F.normalize(self.local_head(tokens1[:, self.visual.num_prefix_tokens:]), dim=-1)
            sentences, sentence_mask = self._sentences(out.last_hidden_state, ids)
            terms["sla"] = self.sla(gather_rows(patches), gather_padded(sentences), gather_padded(sentence_mask),
                                    self.sla_logit_scale)
        loss = sum(terms.values())
        return {"loss": loss, **{k: v.detach() for k, v in terms.items()}}
