"""Independent reference implementations of each method's loss, written from the
equations of the official code (open_clip ``loss.py``; XYPB/MaMA ``model.py`` and
``backbones/loss.py``; HKU-MedAI/MGCA ``mgca_module.py``; RyanWangZf/MedCLIP
``losses.py``; Mammo-CLIP's ``breastclip/loss/breast_clip.py``; XYPB/GLAM ``model.py`` and
``backbones/encoder_dino.py``), not from this project's ``models/losses.py``.

They are deliberately written another way: explicit loops over samples and rows, the
official code's order of operations (per-text SLA loop, quantiles over non-zero weights,
Sinkhorn with marginal vectors), log-sum-exp by hand. Slow, float64, easy to check by eye.
"""

from __future__ import annotations

import torch


def cross_entropy_row(logits_k: torch.Tensor, target: int) -> torch.Tensor:
    """-log softmax(logits)[target], by hand."""
    top = logits_k.max()
    return -(logits_k[target] - top - torch.log(torch.exp(logits_k - top).sum()))


def mean_cross_entropy(logits_nk: torch.Tensor) -> torch.Tensor:
    """Mean over rows of the cross-entropy with target = row index."""
    return torch.stack([cross_entropy_row(logits_nk[i], i) for i in range(len(logits_nk))]).mean()


def unit(x: torch.Tensor) -> torch.Tensor:
    return x / torch.sqrt((x * x).sum(-1, keepdim=True))


# --- CLIP (open_clip ClipLoss) and MaMA's CLIP terms ------------------------------------
def clip_pair(image_nd, text_nd, scale) -> tuple[torch.Tensor, torch.Tensor]:
    """The two cross-entropies of an image-text score matrix: image->text, text->image."""
    scores = scale * image_nd @ text_nd.T
    return mean_cross_entropy(scores), mean_cross_entropy(scores.T)


# --- NT-Xent as lightly / MaMA's backbones/loss.py builds it -----------------------------
def ntxent(out0_nd, out1_nd, temperature=0.5) -> torch.Tensor:
    """Normalises, then rows [out0 . out1 | out0 . out0 without self] and [out1 . out0 |
    out1 . out1 without self]; target of row i (either half) is column i."""
    out0, out1 = unit(out0_nd), unit(out1_nd)
    n = len(out0)
    losses = []
    for anchor, partner in ((out0, out1), (out1, out0)):
        for i in range(n):
            cross = anchor[i] @ partner.T / temperature
            same = torch.stack([anchor[i] @ anchor[j] for j in range(n) if j != i]) / temperature
            losses.append(cross_entropy_row(torch.cat([cross, same]), i))
    return torch.stack(losses).mean()


# --- MaMA's model.py forward ----------------------------------------------------------------
def mama_sla(patches: list[torch.Tensor], sentences: list[torch.Tensor], local_scale) -> torch.Tensor:
    """``patches[i]``: (P, D) of image i; ``sentences[j]``: (S_j, D) of report j. The
    official loop over reports: rows of both score matrices are reports."""
    all_patches = torch.stack(patches)  # N, P, D
    t2i_rows, i2t_rows = [], []
    for sent_sd in sentences:
        scores_nps = torch.einsum("npc,sc->nps", all_patches, sent_sd)
        t2i_rows.append(scores_nps.max(dim=1).values.mean(dim=1))  # max over patches, mean over sentences
        i2t_rows.append(scores_nps.max(dim=2).values.mean(dim=1))  # max over sentences, mean over patches
    total = 0.0
    for rows in (t2i_rows, i2t_rows):
        scores = torch.stack(rows) * local_scale
        total = total + mean_cross_entropy(scores) + mean_cross_entropy(scores.T)
    return total


def mama_total(image1, image2, text, ntx1, ntx2, patches, sentences, scale, local_scale) -> dict:
    """Every term of the official loss after the late-loss step, and their sum."""
    terms = {"clip_view1": sum(clip_pair(image1, text, scale)),
             "ntxent": ntxent(ntx2, ntx1, 0.5),
             "clip_view2": sum(clip_pair(image2, text, scale)),
             "sla": mama_sla(patches, sentences, local_scale)}
    return terms | {"loss": sum(terms.values())}


# --- MGCA's mgca_module.py token-level loss -------------------------------------------------
def quantile_clip_nonzero(weights_k: torch.Tensor) -> torch.Tensor:
    w = weights_k.clone()
    nonzero = w.nonzero().squeeze(-1)
    low, high = torch.quantile(w[nonzero], 0.1), torch.quantile(w[nonzero], 0.9)
    w[nonzero] = w[nonzero].clip(low, high)
    return w / w.sum()


def quantile_clip_all(weights_k: torch.Tensor) -> torch.Tensor:
    w = weights_k.clip(torch.quantile(weights_k, 0.1), torch.quantile(weights_k, 0.9))
    return w / w.sum()


def _two_way_weighted(sim_qq: torch.Tensor, weight_q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    q = len(sim_qq)
    by_row = sum(cross_entropy_row(sim_qq[i], i) * weight_q[i] for i in range(q))
    by_col = sum(cross_entropy_row(sim_qq[:, j], j) * weight_q[j] for j in range(q))
    return by_row, by_col


def mgca_token(words, word_attention, word_is_pad, patches, patch_attention, t=0.1) -> torch.Tensor:
    """``words`` (N, W, D) after the local head (padding rows included), ``word_attention``
    (N, W) zero at padding, ``word_is_pad`` (N, W) bool; ``patches`` (N, P, D),
    ``patch_attention`` (N, P). ViT backbone: the patch context is not normalised."""
    n = len(words)
    word_1 = word_2 = patch_1 = patch_2 = 0.0
    for b in range(n):
        attn = torch.softmax(words[b] @ patches[b].T / t, dim=-1)
        context = unit(attn @ patches[b])
        r, c = _two_way_weighted(words[b] @ context.T / t, quantile_clip_nonzero(word_attention[b]))
        word_1, word_2 = word_1 + r, word_2 + c
        sim = patches[b] @ words[b].T
        sim = torch.where(word_is_pad[b][None, :], torch.full_like(sim, float("-inf")), sim)
        patch_context = torch.softmax(sim / t, dim=-1) @ words[b]
        r, c = _two_way_weighted(patches[b] @ patch_context.T / t, quantile_clip_all(patch_attention[b]))
        patch_1, patch_2 = patch_1 + r, patch_2 + c
    return (word_1 / n + word_2 / n) / 2 + (patch_1 / n + patch_2 / n) / 2


def mgca_sinkhorn(scores_nk, epsilon=0.05, iterations=3) -> torch.Tensor:
    q = torch.exp(scores_nk / epsilon).T.clone()
    q = q / q.sum()
    k, b = q.shape
    r, c = torch.ones(k, dtype=q.dtype) / k, torch.ones(b, dtype=q.dtype) / b
    for _ in range(iterations):
        u = q.sum(dim=1)
        q = q * (r / u)[:, None]
        q = q * (c / q.sum(dim=0))[None, :]
    return (q / q.sum(dim=0, keepdim=True)).T


def mgca_prototype(image_nd, text_nd, prototypes_kd) -> torch.Tensor:
    image_out, text_out = image_nd @ prototypes_kd.T, text_nd @ prototypes_kd.T
    with torch.no_grad():
        image_code, text_code = mgca_sinkhorn(image_out), mgca_sinkhorn(text_out)
    image_prob, text_prob = torch.softmax(image_out / 0.2, 1), torch.softmax(text_out / 0.2, 1)
    i2t = -torch.mean(torch.sum(image_code * torch.log(text_prob), dim=1))
    t2i = -torch.mean(torch.sum(text_code * torch.log(image_prob), dim=1))
    return (i2t + t2i) / 2


def mgca_instance(image_nd, text_nd) -> torch.Tensor:
    return sum(clip_pair(image_nd, text_nd, 1 / 0.07))


# --- MedCLIP's losses.py ----------------------------------------------------------------------
def medclip_soft_clip(image_nd, text_nd, image_labels, text_labels, scale) -> torch.Tensor:
    logits = (text_nd @ image_nd.T * scale).T  # compute_logits: logits_per_text transposed
    label_sim = image_labels @ text_labels.T

    def soft_xent(inputs, target):
        return -(target * torch.log_softmax(inputs, dim=1)).sum() / inputs.shape[0]

    return (soft_xent(logits, torch.softmax(label_sim, 1)) + soft_xent(logits.T, torch.softmax(label_sim.T, 1))) / 2


# --- Mammo-CLIP's breast_clip.py (BreastClip.forward, one process) ---------------------------
def mammoclip_loss(image, image_view, text, text2, scale, i2i_weight=1.0, t2t_weight=0.5) -> torch.Tensor:
    """The official forward, one statement after another: two cross-entropies (rows of each
    side against all of the other) for I1-T1, I2-T1, I1-T2, I2-T2 accumulated into i2t and
    t2i and divided by 4; I1 x I2 and I2 x I1 halved; T2 x T1 and T1 x T2 halved; then
    (i2t + t2i) / 2 + i2i_weight * i2i + t2t_weight * t2t."""
    loss_i2t = loss_t2i = 0
    for img, txt in ((image, text), (image_view, text), (image, text2), (image_view, text2)):
        loss_i2t = loss_i2t + mean_cross_entropy(scale * img @ txt.T)
        loss_t2i = loss_t2i + mean_cross_entropy(scale * txt @ img.T)
    loss_i2t, loss_t2i = loss_i2t / 4.0, loss_t2i / 4.0
    loss_i2i = (mean_cross_entropy(scale * image @ image_view.T) + mean_cross_entropy(scale * image_view @ image.T)) / 2.0
    loss_t2t = (mean_cross_entropy(scale * text2 @ text.T) + mean_cross_entropy(scale * text @ text2.T)) / 2.0
    return (loss_i2t + loss_t2i) / 2.0 + loss_i2i * i2i_weight + loss_t2t * t2t_weight


# --- GLAM's model.py forward ----------------------------------------------------------------
class GlamAttentionalPooler(torch.nn.Module):
    """backbones/encoder_dino.py ``AttentionalPooler`` as written there: sequence-first
    attention with separate key and value widths (equal here, so the same packed weights)."""

    def __init__(self, d_model: int, context_dim: int, n_head: int = 8, n_queries: int = 256):
        super().__init__()
        self.n_head, self.n_queries = n_head, n_queries
        self.query = torch.nn.Parameter(torch.randn(n_queries, d_model))
        self.attn = torch.nn.MultiheadAttention(d_model, n_head, kdim=context_dim, vdim=context_dim)
        self.ln_q, self.ln_k = torch.nn.LayerNorm(d_model), torch.nn.LayerNorm(context_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.ln_k(x).permute(1, 0, 2)  # NLD -> LND
        N = x.shape[1]
        q = self.ln_q(self.query)
        out = self.attn(q.unsqueeze(1).expand(-1, N, -1), x, x, need_weights=False)[0]
        return out.permute(1, 0, 2)  # LND -> NLD


def _glam_ce_both_ways(sim_bkk: torch.Tensor) -> torch.Tensor:
    """``0.5 * (CE(sim.reshape(b*k, k)) + CE(sim.permute(0, 2, 1).reshape(b*k, k)))`` with
    labels arange(k) repeated b times: every row of every matrix, then every column."""
    rows = [cross_entropy_row(sim_bkk[b, i], i) for b in range(sim_bkk.shape[0]) for i in range(sim_bkk.shape[1])]
    cols = [cross_entropy_row(sim_bkk[b, :, i], i) for b in range(sim_bkk.shape[0]) for i in range(sim_bkk.shape[1])]
    return 0.5 * (torch.stack(rows).mean() + torch.stack(cols).mean())


GLAM_WEIGHTS = {"clip": 1.0, "ntxent": 1.0, "patch_position": 1.0, "patch_same_position": 1.0}


def glam_forward(img_feat_q, patch_feat_q, ext_feat_s1, ex_patch_feat_q, report_feat_q, m: dict,
                 weights: dict = GLAM_WEIGHTS, columns: bool = True) -> dict:
    """model.py ``forward`` with pretrain.sh's flags (--slip --patch_contrast --attn_pooler
    --same_pos_contrast, no --symmetric_clip, no --all_patch_contrast, late_loss -1), from
    the encoders' outputs: ``img_feat_q``/``ext_feat_s1`` the normed [CLS] of view 1 (CC)
    and view 2 (MLO), ``*patch_feat_q`` their normed patch tokens, ``report_feat_q`` the
    text [CLS]. ``m``: the modules (``global_embed``, ``text_global_embed``, ``simclr_proj``,
    ``merge_patch1``/``2``, ``patch_ln``, ``view_attn1``/``2``) and ``logit_scale``,
    ``patch_scale``. ``columns=False`` attends along rows instead (a wrong pairing)."""
    img_emb_q = unit(m["global_embed"](img_feat_q))
    report_emb_q = unit(m["text_global_embed"](report_feat_q))
    i2t, t2i = clip_pair(img_emb_q, report_emb_q, m["logit_scale"].exp())
    out = {"clip": i2t + t2i}
    out["ntxent"] = ntxent(m["simclr_proj"](ext_feat_s1), m["simclr_proj"](img_feat_q), 0.5)

    bsz, HW, C = patch_feat_q.shape
    mega_patch_emb = m["merge_patch1"](patch_feat_q)  # N x hw x C
    ex_mega_patch_emb = m["merge_patch2"](ex_patch_feat_q)
    s = int(mega_patch_emb.shape[1] ** 0.5)
    mega_patch_emb = mega_patch_emb.permute(0, 2, 1).reshape(bsz, C, s, s)  # N x C x h x w
    ex_mega_patch_emb = ex_mega_patch_emb.permute(0, 2, 1).reshape(bsz, C, s, s)
    order = (0, 3, 2, 1) if columns else (0, 2, 3, 1)  # official: width to the batch
    mega_patch_emb = mega_patch_emb.permute(*order).reshape(bsz * s, s, C)
    ex_mega_patch_emb = ex_mega_patch_emb.permute(*order).reshape(bsz * s, s, C)
    mega_patch_emb = m["patch_ln"](mega_patch_emb)  # Nw x h x C
    ex_mega_patch_emb = m["patch_ln"](ex_mega_patch_emb)
    view1_to_view2 = m["view_attn1"](mega_patch_emb, ex_mega_patch_emb, ex_mega_patch_emb)[0]
    view2_to_view1 = m["view_attn2"](ex_mega_patch_emb, mega_patch_emb, mega_patch_emb)[0]
    scale = m["patch_scale"].exp()

    view1_to_view2 = unit(view1_to_view2).reshape(bsz, s * s, -1)
    mega_patch_emb = unit(mega_patch_emb).reshape(bsz, s * s, -1)
    loss_view1 = _glam_ce_both_ways(scale * torch.bmm(mega_patch_emb, view1_to_view2.transpose(1, 2)))
    view2_to_view1 = unit(view2_to_view1).reshape(bsz, s * s, -1)
    ex_mega_patch_emb = unit(ex_mega_patch_emb).reshape(bsz, s * s, -1)
    loss_view2 = _glam_ce_both_ways(scale * torch.bmm(ex_mega_patch_emb, view2_to_view1.transpose(1, 2)))
    out["patch_position"] = 0.5 * (loss_view1 + loss_view2)

    # same position across the batch: hw x N x C
    v12, v21 = view1_to_view2.permute(1, 0, 2), view2_to_view1.permute(1, 0, 2)
    own1, own2 = mega_patch_emb.permute(1, 0, 2), ex_mega_patch_emb.permute(1, 0, 2)
    loss_pos1 = _glam_ce_both_ways(scale * torch.bmm(own1, v12.transpose(1, 2)))
    loss_pos2 = _glam_ce_both_ways(scale * torch.bmm(own2, v21.transpose(1, 2)))
    out["patch_same_position"] = 0.5 * (loss_pos1 + loss_pos2)
    out["loss"] = sum(weights[k] * out[k] for k in GLAM_WEIGHTS)
    return out
