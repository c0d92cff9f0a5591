"""MGCA (Wang et al. 2022): ViT-B/16 + Bio_ClinicalBERT with three losses, weights 1 / 1 / 1
(the command-line defaults of the official ``mgca_module.py``, HKU-MedAI/MGCA; its class
defaults 1 / 0.7 / 0.5 are overridden there). The table with the paper's and this
project's values is in docs/protocol.md.

- Instance: symmetric InfoNCE at a fixed temperature 0.07, the two directions summed.
- Token (``TokenAlignmentLoss``): words are BERT's last hidden states after [CLS], padding
  positions set to zero before the local head (the official word aggregation pads with
  zero vectors), so padding never moves the loss; word -> patch and patch -> word
  parameter-free cross attention (temperature 0.1, padding keys masked), each token
  contrasted with its attended context within its sample (temperature 0.1), weighted by
  [CLS] attention clipped to its 10-90 % quantiles and normalised per sample; word and
  patch halves summed. The patch context is not L2-normalised for a ViT (official).
- Prototype: 500 prototypes (a bias-free linear layer, rows normalised every step),
  Sinkhorn-Knopp codes (3 iterations, epsilon 0.05) of each modality supervise the
  other's softmax at temperature 0.2; frozen during the first epoch.
- Heads (``encoder.py``): global ``GlobalEmbedding`` 768 -> 2048 BN ReLU -> 128 BN; local
  ``LocalEmbedding`` 1x1 conv with the same widths.
- AdamW (0.9, 0.999), lr 2e-5, weight decay 0.05 on every parameter, warm-up 40 % of the
  steps, cosine; batch 144. Augmentation: a random 224 crop of the 256 image (no flips,
  no jitter). The paper preset builds DeiT-B/16 (the official weights) and normalises with
  its ImageNet statistics (the official code uses 0.5).
Deviation: tokens are WordPiece / BPE pieces; the official code sums the pieces of a word
(features and attention weights) into one word first.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from benchmark.registry import register_model
from models.base import DualEncoder
from models.convirt import TINY_TEXT
from models.encoders import BatchNormMLP
from models.losses import ClipLoss, PrototypeLoss, TokenAlignmentLoss

TEMPERATURE = 0.07
CROP_224_OF_256 = dict(crop_scale=((224 / 256) ** 2,) * 2, crop_ratio=(1.0, 1.0), hflip=False, vflip=False, jitter=0)
TRAIN = dict(betas=(0.9, 0.999), weight_decay=0.05, warmup_fraction=0.4, no_weight_decay="none")


@register_model("mgca")
class MGCA(DualEncoder):
    image_text_term = "instance"  # the term pretraining is judged against chance by
    presets = {
        "tiny": dict(image_size=96, embed_dim=128, head_hidden=256, n_prototypes=50,
                     image=dict(name="vit_tiny", kwargs=dict(width=192, depth=4, heads=3, patch_size=16)),
                     text=dict(TINY_TEXT, config=dict(TINY_TEXT["config"], attn_implementation="eager")),
                     train=dict(TRAIN, batch_size=64, lr=1e-3), augment=CROP_224_OF_256),  # lr: docs/synthetic-data.md
        "paper": dict(image_size=224, embed_dim=128, head_hidden=2048, n_prototypes=500,
                      image=dict(name="deit_base_patch16_224"),
                      text=dict(arch="bert", context_length=112, config=dict(attn_implementation="eager")),
                      train=dict(TRAIN, batch_size=144, lr=2e-5), augment=CROP_224_OF_256),
    }

    def __init__(self, *, n_prototypes: int, head_hidden: int, **kwargs):
        super().__init__(learnable_scale=False, init_logit_scale=math.log(1 / TEMPERATURE), **kwargs)
        width, text_width, dim = self.feature_dim, self.text.width, self.embed_dim
        self.image_head = BatchNormMLP(width, head_hidden, dim)
        self.text_head = BatchNormMLP(text_width, head_hidden, dim)
        self.image_local_head = BatchNormMLP(width, head_hidden, dim)
        self.text_local_head = BatchNormMLP(text_width, head_hidden, dim)
        self.prototypes = nn.Linear(dim, n_prototypes, bias=False).weight
        self.instance_loss = ClipLoss(sum_directions=True)
        self.token_loss = TokenAlignmentLoss(temperature=0.1, normalize_patch_context=False)
        self.prototype_loss = PrototypeLoss(temperature=0.2, epsilon=0.05, iterations=3)
        self._attn_input = None
        self.visual.blocks[-1].attn.register_forward_hook(self._keep_attn_input)

    def _keep_attn_input(self, module, inputs, output):
        self._attn_input = inputs[0]

    @torch.no_grad()
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
        patch_attention_np = self._cls_attention_np()

        out, ids, mask = self.text(batch["caption"], output_attentions=True)
        hidden_ntd = out.last_hidden_state
        text_nd = F.normalize(self.text_head(hidden_ntd[:, 0]), dim=-1)
        word_valid_nt = mask[:, 1:]  # every token after [CLS] that is not padding
        word_attention_nt = out.attentions[-1][:, :, 0, 1:].mean(1).detach()
        words_ntd = F.normalize(self.text_local_head(hidden_ntd[:, 1:] * word_valid_nt[..., None]), dim=-1)

        # instance and prototype terms over the global batch; the token term is per sample
        token = self.token_loss(words_ntd, word_valid_nt, word_attention_nt, patches_npd, patch_attention_np)
        instance = self.instance_loss(image_nd, text_nd, 1 / TEMPERATURE)
        with torch.no_grad():
            self.prototypes.data = F.normalize(self.prototypes.data, dim=-1)
        prototypes = self.prototypes.detach() if batch.get("epoch", 1) == 0 else self.prototypes
        prototype = self.prototype_loss(image_nd, text_nd, prototypes)
        loss = instance + token + prototype
        return {"loss": loss, "instance": instance.detach(), "token": token.detach(), "prototype": prototype.detach()}

    def chance_losses(self, candidates: int) -> dict[str, float]:
        # the token term contrasts each caption's own words and patches: no level common to a batch
        return {"instance": self.instance_loss.chance(candidates),
                "prototype": self.prototype_loss.chance(self.prototypes.shape[0])}
