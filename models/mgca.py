"""MGCA (Wang et al. 2022): ViT-B/16 + Bio_ClinicalBERT with three losses, weights 1/1/1
(METHODS.md section 3):
- instance: symmetric InfoNCE at a fixed temperature 0.07, the two directions summed;
- token: parameter-free cross attention between words and patches, each token contrasted
  with its attended context within its own sample (temperature 0.1), words weighted by
  BERT's last-layer [CLS] attention and patches by the ViT's last-layer [CLS] attention;
- prototype: 500 learnable prototypes, normalised every step, Sinkhorn-Knopp codes
  (3 iterations, epsilon 0.05) of each modality supervise the other's softmax at
  temperature 0.2; prototypes frozen during the first epoch.
Heads: MLP to 128 with batch norm. AdamW lr 2e-5, weight decay 0.05, cosine with warm-up.
Deviation: tokens are BPE / WordPiece pieces, not whole words (MGCA merges pieces).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from benchmark.registry import register_model
from models.base import DualEncoder
from models.convirt import TINY_TEXT
from models.encoders import mlp
from models.gather import gather_rows

TEMPERATURE = 0.07


@register_model("mgca")
class MGCA(DualEncoder):
    presets = {
        "tiny": dict(image_size=96, embed_dim=128, n_prototypes=50,
                     image=dict(name="vit_tiny", kwargs=dict(width=192, depth=4, heads=3, patch_size=16)),
                     text=dict(TINY_TEXT, config=dict(TINY_TEXT["config"], attn_implementation="eager")),
                     train=dict(batch_size=64, lr=3e-4, weight_decay=0.05, warmup_fraction=0.05),
                     augment=dict(crop_scale=(0.6, 1.0))),
        "paper": dict(image_size=224, embed_dim=128, n_prototypes=500, image=dict(name="vit_base_patch16_224"),
                      text=dict(arch="bert", context_length=112, config=dict(attn_implementation="eager")),
                      train=dict(batch_size=144, lr=2e-5, weight_decay=0.05, warmup_fraction=0.05),
                      augment=dict(crop_scale=(0.6, 1.0))),
    }

    def __init__(self, *, n_prototypes: int, **kwargs):
        super().__init__(learnable_scale=False, init_logit_scale=math.log(1 / TEMPERATURE), **kwargs)
        width, text_width, dim = self.feature_dim, self.text.width, self.embed_dim
        self.image_head = mlp(width, width, dim, batch_norm=True)
        self.text_head = mlp(text_width, text_width, dim, batch_norm=True)
        self.image_local_head = mlp(width, width, dim)
        self.text_local_head = mlp(text_width, text_width, dim)
        self.prototypes = nn.Parameter(F.normalize(torch.randn(n_prototypes, dim), dim=-1))
        from models.losses import PrototypeLoss, TokenAlignmentLoss

        self.token_loss = TokenAlignmentLoss(attention_temperature=0.1, temperature=0.1)
        self.prototype_loss = PrototypeLoss(temperature=0.2, epsilon=0.05, iterations=3)
        self._attn_input = None
        self.visual.blocks[-1].attn.register_forward_hook(self._keep_attn_input)
        self._special_ids = {self.text.token_id(t) for t in ("[SOS]", "[EOS]", "[PAD]", "[CLS]")} - {None}

    def _keep_attn_input(self, module, inputs, output):
        self._attn_input = inputs[0]

    def _cls_attention_np(self) -> torch.Tensor:
        """Last ViT block's attention from [CLS] to every patch, averaged over heads."""
        attn, x = self.visual.blocks[-1].attn, self._attn_input
        n, length, width = x.shape
        qkv = attn.qkv(x).reshape(n, length, 3, attn.num_heads, width // attn.num_heads).permute(2, 0, 3, 1, 4)
        q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])
        weights_nhl = torch.softmax((q[:, :, :1] * attn.scale) @ k.transpose(-2, -1), dim=-1)[:, :, 0]
        return weights_nhl.mean(1)[:, self.visual.num_prefix_tokens:]

    def project_text(self, hidden_ntd, mask_nt):
        return self.text_head(hidden_ntd[:, 0])  # the [CLS] / first token

    def training_loss(self, batch: dict) -> dict:
        tokens_nlw = self.visual.forward_features(batch["image"])
        image_nd = F.normalize(self.image_head(self.visual.forward_head(tokens_nlw, pre_logits=True)), dim=-1)
        patches_npd = F.normalize(self.image_local_head(tokens_nlw[:, self.visual.num_prefix_tokens:]), dim=-1)
        patch_weight_np = self._cls_attention_np()

        out, ids, mask = self.text(batch["caption"], output_attentions=True)
        hidden_ntd = out.last_hidden_state
        text_nd = F.normalize(self.text_head(hidden_ntd[:, 0]), dim=-1)
        word_mask_nt = mask.clone()
        for special in self._special_ids:
            word_mask_nt[ids == special] = 0
        word_weight_nt = out.attentions[-1][:, :, 0, :].mean(1) * word_mask_nt
        words_ntd = F.normalize(self.text_local_head(hidden_ntd), dim=-1)

        # instance and prototype terms over the global batch; the token term is per sample
        token = self.token_loss(words_ntd, word_mask_nt, word_weight_nt, patches_npd, patch_weight_np)
        image_nd, text_nd = gather_rows(image_nd), gather_rows(text_nd)
        logits_nn = image_nd @ text_nd.T / TEMPERATURE
        targets = torch.arange(len(logits_nn), device=logits_nn.device)
        instance = F.cross_entropy(logits_nn, targets) + F.cross_entropy(logits_nn.T, targets)
        with torch.no_grad():
            self.prototypes.data = F.normalize(self.prototypes.data, dim=-1)
        prototypes = self.prototypes.detach() if batch.get("epoch", 1) == 0 else self.prototypes
        prototype = self.prototype_loss(image_nd, text_nd, prototypes)
        loss = instance + token + prototype
        return {"loss": loss, "instance": instance.detach(), "token": token.detach(), "prototype": prototype.detach()}
