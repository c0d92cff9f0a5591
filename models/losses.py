"""Losses shared by the methods (one class per loss, shapes in names, no magic).

N: batch, D: embedding width, P: patches, S: sentences, T: tokens, K: prototypes.
All features handed to a loss are L2-normalised unless its docstring says otherwise.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

MAX_LOGIT_SCALE = math.log(100.0)


class ClipLoss(nn.Module):
    """Symmetric InfoNCE: mean of image->text and text->image cross-entropy.

    ``logit_scale`` is the log of the inverse temperature; it is clamped at ln(100)
    here, in the forward pass, as CLIP does.
    """

    def forward(self, image_features_nd: torch.Tensor, text_features_nd: torch.Tensor,
                logit_scale: torch.Tensor) -> torch.Tensor:
        scale = logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()
        logits_nn = scale * image_features_nd @ text_features_nd.T
        targets_n = torch.arange(logits_nn.shape[0], device=logits_nn.device)
        return (F.cross_entropy(logits_nn, targets_n) + F.cross_entropy(logits_nn.T, targets_n)) / 2


class WeightedInfoNCE(nn.Module):
    """ConVIRT: ``weight * L(image->text) + (1 - weight) * L(text->image)`` at a fixed temperature."""

    def __init__(self, image_to_text_weight: float = 0.75, temperature: float = 0.1):
        super().__init__()
        self.weight = image_to_text_weight
        self.temperature = temperature

    def forward(self, image_features_nd: torch.Tensor, text_features_nd: torch.Tensor) -> torch.Tensor:
        logits_nn = image_features_nd @ text_features_nd.T / self.temperature
        targets_n = torch.arange(logits_nn.shape[0], device=logits_nn.device)
        image_to_text = F.cross_entropy(logits_nn, targets_n)
        text_to_image = F.cross_entropy(logits_nn.T, targets_n)
        return self.weight * image_to_text + (1 - self.weight) * text_to_image


class NTXentLoss(nn.Module):
    """SimCLR's NT-Xent between two views: each view's positive is the other view of the
    same image, negatives are the other 2N - 2 embeddings."""

    def __init__(self, temperature: float = 0.5):
        super().__init__()
        self.temperature = temperature

    def forward(self, view1_nd: torch.Tensor, view2_nd: torch.Tensor) -> torch.Tensor:
        n = view1_nd.shape[0]
        z_md = torch.cat([view1_nd, view2_nd])  # M = 2N
        sim_mm = z_md @ z_md.T / self.temperature
        sim_mm = sim_mm.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=sim_mm.device), float("-inf"))
        targets_m = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(sim_mm.device)
        return F.cross_entropy(sim_mm, targets_m)


def local_alignment_scores(patches_npd: torch.Tensor, sentences_nsd: torch.Tensor,
                           sentence_mask_ns: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """MaMA's symmetric local alignment scores for every (image i, report j) pair.

    text->image: for each sentence of j the best-matching patch of i, averaged over j's
    sentences; image->text: for each patch of i the best-matching sentence of j, averaged
    over i's patches. Returns (image_to_text_nn, text_to_image_nn), rows = images."""
    sim_ijps = torch.einsum("ipd,jsd->ijps", patches_npd, sentences_nsd)
    mask_1j1s = sentence_mask_ns[None, :, None, :].bool()
    best_patch_ijs = sim_ijps.amax(dim=2)  # (i, j, s): best patch of i for sentence s of j
    counts_j = sentence_mask_ns.sum(dim=1).clamp(min=1)
    text_to_image_ij = (best_patch_ijs * sentence_mask_ns[None]).sum(-1) / counts_j[None]
    best_sentence_ijp = sim_ijps.masked_fill(~mask_1j1s, float("-inf")).amax(dim=3)
    image_to_text_ij = best_sentence_ijp.mean(dim=2)
    return image_to_text_ij, text_to_image_ij


class LocalAlignmentLoss(nn.Module):
    """Cross-entropy both ways on the local alignment scores, with their own logit scale."""

    def forward(self, patches_npd, sentences_nsd, sentence_mask_ns, logit_scale) -> torch.Tensor:
        image_to_text_nn, text_to_image_nn = local_alignment_scores(patches_npd, sentences_nsd, sentence_mask_ns)
        scale = logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()
        targets_n = torch.arange(image_to_text_nn.shape[0], device=image_to_text_nn.device)
        return (F.cross_entropy(scale * image_to_text_nn, targets_n)
                + F.cross_entropy(scale * text_to_image_nn.T, targets_n)) / 2


class TokenAlignmentLoss(nn.Module):
    """MGCA's token-level alignment: parameter-free cross attention from each word to the
    patches (and each patch to the words), then a per-sample contrast of every token with
    its attended context among the sample's tokens, weighted by [CLS] attention."""

    def __init__(self, attention_temperature: float = 0.1, temperature: float = 0.1):
        super().__init__()
        self.attention_temperature = attention_temperature
        self.temperature = temperature

    def _one_way(self, queries_nqd, keys_nkd, query_mask_nq, query_weight_nq) -> torch.Tensor:
        attn_nqk = torch.softmax(queries_nqd @ keys_nkd.transpose(1, 2) / self.attention_temperature, dim=-1)
        context_nqd = F.normalize(attn_nqk @ keys_nkd, dim=-1)
        logits_nqq = queries_nqd @ context_nqd.transpose(1, 2) / self.temperature
        logits_nqq = logits_nqq.masked_fill(~query_mask_nq[:, None, :].bool(), float("-inf"))
        q = logits_nqq.shape[1]
        targets = torch.arange(q, device=logits_nqq.device).expand(logits_nqq.shape[0], q)
        per_query = (F.cross_entropy(logits_nqq.reshape(-1, q), targets.reshape(-1), reduction="none")
                     + F.cross_entropy(logits_nqq.transpose(1, 2).reshape(-1, q), targets.reshape(-1),
                                       reduction="none")) / 2
        weights = (query_weight_nq * query_mask_nq).reshape(-1)
        per_query = torch.where(weights > 0, per_query, torch.zeros_like(per_query))
        return (per_query * weights).sum() / weights.sum().clamp(min=1e-8)

    def forward(self, words_ntd, word_mask_nt, word_weight_nt, patches_npd, patch_weight_np) -> torch.Tensor:
        patch_mask_np = torch.ones(patches_npd.shape[:2], device=patches_npd.device)
        word_to_patch = self._one_way(words_ntd, patches_npd, word_mask_nt, word_weight_nt)
        patch_to_word = self._one_way(patches_npd, words_ntd, patch_mask_np, patch_weight_np)
        return (word_to_patch + patch_to_word) / 2


@torch.no_grad()
def sinkhorn(scores_nk: torch.Tensor, epsilon: float = 0.05, iterations: int = 3) -> torch.Tensor:
    """Sinkhorn-Knopp soft codes: rows sum to 1, every prototype gets 1/K of the mass."""
    q_kn = torch.exp(scores_nk / epsilon).T
    q_kn /= q_kn.sum()
    k, n = q_kn.shape
    for _ in range(iterations):
        q_kn /= q_kn.sum(dim=1, keepdim=True)
        q_kn /= k
        q_kn /= q_kn.sum(dim=0, keepdim=True)
        q_kn /= n
    return (q_kn * n).T


class PrototypeLoss(nn.Module):
    """MGCA's prototype-level alignment: each modality's Sinkhorn codes supervise the other
    modality's softmax over the prototypes (swapped prediction)."""

    def __init__(self, temperature: float = 0.2, epsilon: float = 0.05, iterations: int = 3):
        super().__init__()
        self.temperature, self.epsilon, self.iterations = temperature, epsilon, iterations

    def forward(self, image_nd, text_nd, prototypes_kd) -> torch.Tensor:
        image_scores_nk = image_nd @ prototypes_kd.T
        text_scores_nk = text_nd @ prototypes_kd.T
        image_codes = sinkhorn(image_scores_nk, self.epsilon, self.iterations)
        text_codes = sinkhorn(text_scores_nk, self.epsilon, self.iterations)
        image_logp = F.log_softmax(image_scores_nk / self.temperature, dim=1)
        text_logp = F.log_softmax(text_scores_nk / self.temperature, dim=1)
        return -((text_codes * image_logp).sum(1).mean() + (image_codes * text_logp).sum(1).mean()) / 2


def semantic_targets(image_labels_nl: torch.Tensor, text_labels_ml: torch.Tensor) -> torch.Tensor:
    """MedCLIP's soft targets: row-softmax of label-vector similarity (labels L2-normalised)."""
    sim_nm = F.normalize(image_labels_nl.float(), dim=-1) @ F.normalize(text_labels_ml.float(), dim=-1).T
    return torch.softmax(sim_nm / 0.01, dim=1)  # sharp: equal label vectors share the mass


class SemanticMatchingLoss(nn.Module):
    """MedCLIP: soft cross-entropy both ways against label-similarity targets, so a caption
    with the same findings counts as a positive for an image even when not its own."""

    def forward(self, image_nd, text_nd, image_labels_nl, text_labels_nl, logit_scale) -> torch.Tensor:
        scale = logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()
        logits_nn = scale * image_nd @ text_nd.T
        image_targets = semantic_targets(image_labels_nl, text_labels_nl)
        text_targets = semantic_targets(text_labels_nl, image_labels_nl)
        image_to_text = -(image_targets * F.log_softmax(logits_nn, dim=1)).sum(1).mean()
        text_to_image = -(text_targets * F.log_softmax(logits_nn.T, dim=1)).sum(1).mean()
        return (image_to_text + text_to_image) / 2
