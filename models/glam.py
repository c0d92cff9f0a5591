"""GLAM (Du, Chen, Dvornek, MICCAI 2025): MaMA's successor, global and local alignment of
the two views of a breast, guided by their geometry. Constants from the official code
(XYPB/GLAM: ``model.py``, ``backbones/encoder_dino.py``, ``backbones/encoder_bert.py``,
``backbones/bert_config.json``, ``backbones/utils.py``, ``dataset/pretrain_embed_dataset.py``,
``dataset/transforms.py``, ``train.py``, ``scripts/pretrain.sh``); the table with the
paper's and this project's values is in docs/protocol.md.

- Image: DINOv2 ViT-B/14 with 4 registers at 518 x 518, fully trained, gradient
  checkpointing. Global feature: the [CLS] token after the final norm (pretrain.sh has no
  ``--pool_feat``), linear 768 -> 512 (``--linear_proj``, ``--emb_dim 512``). Local: the
  patch tokens after the final norm (37 x 37).
- Text: Bio_ClinicalBERT cut to its first 6 layers (``bert_config.json``), fully trained;
  the tokenizer gets [BOS], [EOS] and [KEY], captions are wrapped as [BOS] caption [EOS]
  (sentences end in [SEP]) and padded to 144 tokens. Global: the [CLS] hidden state,
  linear 768 -> 512.
- Views: image 1 is always the CC view and image 2 the MLO view (aligned to the CC
  orientation, ``--aligned_mlo --align_orientation``) of the same breast in the same exam (``--inter_view --fixed_view``; with ``--fixed_view`` the other view is always
  loaded), whichever of the two was drawn; the caption is the drawn image's. A breast
  without its other view contributes a second augmentation of the drawn image.
- Losses, each with weight 1, all from step 0 (``--late_loss`` is -1):
  ``clip``: CLIP(CC, caption), the two cross-entropies summed, learnable scale from 1/0.07,
  never clamped. ``ntxent``: NT-Xent(MLO, CC) at temperature 0.5 through
  ``SimCLRProjectionHead`` (768 -> 768 BN ReLU -> 512 BN, no biases) on the [CLS] features
  (``--slip``, ``slip_loss_lambda`` 1). ``patch_position`` and ``patch_same_position``
  (``--patch_contrast --same_pos_contrast``): each view's patch tokens pooled into (37 // 4)^2
  = 81 mega-patches by its own attentional pooler (8 heads, learnt queries; ``--attn_pooler
  --mega_patch_size 4``), on a 9 x 9 grid, layer-normed; each column of one view attends to
  the same column of the other (MultiheadAttention, 4 heads: ``--num_heads``' default; one
  module per direction) and ``CrossViewPatchLoss`` contrasts each mega-patch with what was
  gathered for it, by position within the image and by image at the same position, with
  its own learnable scale from 1/0.07; each term is the mean of the two views'.
- No symmetric CLIP on the second view: pretrain.sh does not pass ``--symmetric_clip``.
- Augmentation (``SimCLRFixedTransform``, the transform ``--patch_contrast`` selects): no
  crop and no flip (the views' geometry must survive), a random affine (rotation 10
  degrees, shift 5 %, zoom 0.9-1.1), brightness/contrast jitter 0.8 with p 0.8, Gaussian
  blur (7 x 7, sigma 0.1-2) with p 0.4; each view drawn on its own. The tiny preset leaves
  out the jitter, as MaMA's. Images are normalised
  with DINOv2's (ImageNet) statistics, not the official 0.5, as for MaMA.
- AdamW (0.9, 0.999), lr 4e-5, weight decay 0.2 on every parameter, 4,000 warm-up steps of
  40,000 (10 %), cosine; batch 48 x 4 GPUs x 2 accumulated = 384.
Not repeated from the official code: per-GPU negatives (gathered here, as for every
method), the 0.5 image normalisation (above). The MLO view is rotated to the CC orientation
along the pectoral line beforehand, as ``scripts/align_mlo_mammo.py`` does
(``benchmark/data/mlo_alignment.py``, the workflow's ``align_mlo`` step). Not yet here: the text
augmentation (``--aug_text --heavy_aug``: synonyms, swaps, deletions, back-translation)
and the metadata masking rate of 0.8 (the run's ``pretrain.mask_prob`` applies, as for
every method); docs/protocol.md lists them.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from benchmark.registry import register_model
from models.base import DualEncoder
from models.encoders import BatchNormMLP
from models.losses import ClipLoss, CrossViewPatchLoss, NTXentLoss
from models.text_towers import tower_text

# backbones/utils.py get_tokenizer("bert"): the tokens the official code adds to Bio_ClinicalBERT's
SPECIAL_TOKENS = dict(bos_token="[BOS]", eos_token="[EOS]", additional_special_tokens=["[KEY]"])
AUGMENT = dict(crop=False, hflip=False, vflip=False, jitter=0.8, jitter_p=0.8, blur_p=0.4, blur_kernel=7,
               affine_p=1.0, affine_degrees=10.0, affine_translate=0.05, affine_scale=(0.9, 1.1))
TINY_AUGMENT = dict(AUGMENT, jitter=0.0)  # as MaMA's tiny preset: no colour jitter for a random ViT (models/mama.py)
# TextTransform(heavy_aug): stop words 0.5, swap 0.3, deletion 0.3, sentence swap 0.3 (synonyms 0.3 and
# back-translation 0.5 need corpora and translation models this project does not ship: docs/protocol.md)
TEXT_AUGMENT = dict(remove_stop_words_p=0.5, swap_p=0.3, delete_p=0.3, sentence_swap_p=0.3)
TRAIN = dict(lr=4e-5, weight_decay=0.2, betas=(0.9, 0.999), warmup_fraction=0.1, no_weight_decay="none")


class AttentionalPooler(nn.Module):
    """Learnt queries attending to a view's patch tokens (open_clip's ``AttentionalPooler``,
    as GLAM's ``encoder_dino.py`` copies it): (N, L, C) -> (N, Q, C)."""

    def __init__(self, width: int, n_queries: int, heads: int = 8):
        super().__init__()
        self.query = nn.Parameter(torch.randn(n_queries, width))
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_q, self.ln_k = nn.LayerNorm(width), nn.LayerNorm(width)

    def forward(self, tokens_nlc: torch.Tensor) -> torch.Tensor:
        keys_nlc = self.ln_k(tokens_nlc)
        queries_nqc = self.ln_q(self.query).unsqueeze(0).expand(len(tokens_nlc), -1, -1)
        return self.attn(queries_nqc, keys_nlc, keys_nlc, need_weights=False)[0]


@register_model("glam")
class Glam(DualEncoder):
    image_text_term = "clip"  # the term pretraining is judged against chance by
    batch_needs = ("cc_view", "mlo_view", "caption")
    presets = {
        "tiny": dict(image_size=96, embed_dim=128, mega_patch=2, pooler_heads=8, view_heads=4,
                     image=dict(name="vit_tiny_reg", kwargs=dict(width=192, depth=4, heads=3, patch_size=16)),
                     # the workflow's tiny BERT, cut to half its layers as GLAM cuts Bio_ClinicalBERT
                     text=dict(tower_text("bert_tiny", 144, special_tokens=SPECIAL_TOKENS), layers=1),
                     train=dict(TRAIN, batch_size=48, lr=3e-4), augment=TINY_AUGMENT, text_augment=TEXT_AUGMENT),
        "paper": dict(image_size=518, embed_dim=512, mega_patch=4, pooler_heads=8, view_heads=4,
                      grad_checkpointing=True, image=dict(name="vit_base_patch14_reg4_dinov2"),
                      text=dict(arch="bert", context_length=144, special_tokens=SPECIAL_TOKENS, layers=6,
                                config=dict(vocab_size=28996)),
                      train=dict(TRAIN, batch_size=384), augment=AUGMENT, text_augment=TEXT_AUGMENT),
    }

    def __init__(self, *, mega_patch: int, pooler_heads: int, view_heads: int, grad_checkpointing: bool = False,
                 **kwargs):
        super().__init__(**kwargs)
        width, dim = self.feature_dim, self.embed_dim
        self.grid = (self.image_size // self.visual.patch_embed.patch_size[0]) // mega_patch  # mega-patches a side
        self.image_head = nn.Linear(width, dim)
        self.text_head = nn.Linear(self.text.width, dim)
        self.ntxent_head = BatchNormMLP(width, width, dim, bias=False, out_affine=True)
        self.pool_cc = AttentionalPooler(width, self.grid ** 2, pooler_heads)
        self.pool_mlo = AttentionalPooler(width, self.grid ** 2, pooler_heads)
        self.patch_norm = nn.LayerNorm(width)
        self.attend_cc_to_mlo = nn.MultiheadAttention(width, view_heads, batch_first=True)
        self.attend_mlo_to_cc = nn.MultiheadAttention(width, view_heads, batch_first=True)
        self.patch_logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.clip_loss, self.ntxent = ClipLoss(sum_directions=True), NTXentLoss(temperature=0.5)
        self.patch_loss = CrossViewPatchLoss()
        if grad_checkpointing:
            self.visual.set_grad_checkpointing(True)

    def _tokens(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The [CLS] feature and the patch tokens, both after the final norm."""
        tokens = self.visual.forward_features(images)
        return tokens[:, 0], tokens[:, self.visual.num_prefix_tokens:]

    def image_features(self, images):
        return self._tokens(images)[0]

    def project_text(self, hidden_ntd, mask_nt):
        return self.text_head(hidden_ntd[:, 0])  # [CLS]

    def _columns(self, pooled_nqc: torch.Tensor) -> torch.Tensor:
        """(N, G*G, C) mega-patches in row-major grid order -> (N*G, G, C): one sequence per
        column of the grid (the rows of that column, top to bottom), layer-normed."""
        n, _, c = pooled_nqc.shape
        grid = pooled_nqc.reshape(n, self.grid, self.grid, c).transpose(1, 2)  # N, column, row, C
        return self.patch_norm(grid.reshape(n * self.grid, self.grid, c))

    def cross_view_patches(self, patches_cc: torch.Tensor, patches_mlo: torch.Tensor):
        """Mega-patches of each view and what the other view's same column gave each of them,
        normalised, as (N, G*G, C) in column-major grid order: ((cc, from_mlo), (mlo, from_cc))."""
        n = len(patches_cc)
        cc, mlo = self._columns(self.pool_cc(patches_cc)), self._columns(self.pool_mlo(patches_mlo))
        from_mlo = self.attend_cc_to_mlo(cc, mlo, mlo, need_weights=False)[0]
        from_cc = self.attend_mlo_to_cc(mlo, cc, cc, need_weights=False)[0]
        flat = lambda x: F.normalize(x, dim=-1).reshape(n, self.grid ** 2, -1)  # noqa: E731
        return (flat(cc), flat(from_mlo)), (flat(mlo), flat(from_cc))

    def training_loss(self, batch: dict) -> dict:
        terms = self.loss_terms(batch)
        return {"loss": terms["loss"], **{k: v.detach() for k, v in terms.items() if k != "loss"}}

    def loss_terms(self, batch: dict) -> dict:
        """Every term and their sum (``loss``), with their graphs."""
        cls_cc, patches_cc = self._tokens(batch["cc_view"])
        cls_mlo, patches_mlo = self._tokens(batch["mlo_view"])
        image_nd = F.normalize(self.image_head(cls_cc), dim=-1)
        text_nd = self.encode_text(batch["caption"])
        terms = {"clip": self.clip_loss(image_nd, text_nd, self.logit_scale.exp()),
                 "ntxent": self.ntxent(F.normalize(self.ntxent_head(cls_mlo), dim=-1),
                                       F.normalize(self.ntxent_head(cls_cc), dim=-1))}
        scale = self.patch_logit_scale.exp()
        per_view = [self.patch_loss(own, other, scale) for own, other in self.cross_view_patches(patches_cc, patches_mlo)]
        terms["patch_position"] = (per_view[0]["position"] + per_view[1]["position"]) / 2
        terms["patch_same_position"] = (per_view[0]["same_position"] + per_view[1]["same_position"]) / 2
        return {"loss": sum(terms.values()), **terms}

    def chance_losses(self, candidates: int) -> dict[str, float]:
        patch = self.patch_loss.chance(candidates, self.grid ** 2)
        return {"clip": self.clip_loss.chance(candidates), "ntxent": self.ntxent.chance(candidates),
                "patch_position": patch["position"], "patch_same_position": patch["same_position"]}
