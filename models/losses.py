"""Losses shared by the methods (one class per loss, shapes in names, no magic).

N: batch, D: embedding width, P: patches, S: sentences, T: tokens, K: prototypes.
All features handed to a loss are L2-normalised unless its docstring says otherwise.
``logit_scale`` arguments are multipliers (the exponential already taken), as in
open_clip's ``ClipLoss``; clamping a learnable scale is the model's business (it clamps
the parameter after each optimizer step, see ``DualEncoder.clamp_parameters``).
Every constant and weight is listed, with the official file it comes from, in
docs/protocol.md; tests/reference/ checks each loss against an independent reference.

Losses that contrast across the batch hold a ``Gather`` (``models/gather.py``) and gather
their inputs from every rank of a data-parallel run themselves; ``gather`` is their
distributed setting, as open_clip's ``ClipLoss(local_loss, rank, world_size)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.gather import GATHER_ALL, Gather


def _at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """bf16 / fp16 logits as fp32 (what CUDA autocast does for softmax and log-softmax; CPU
    autocast keeps bf16); fp32 and fp64 inputs as they are."""
    return x.float() if x.dtype in (torch.bfloat16, torch.float16) else x


def _diagonal_targets(logits_nn: torch.Tensor) -> torch.Tensor:
    return torch.arange(logits_nn.shape[0], device=logits_nn.device)


class ClipLoss(nn.Module):
    """Symmetric InfoNCE: cross-entropy image->text and text->image on one N x N matrix.

    ``sum_directions``: the official MaMA and MGCA code add the two directions; CLIP
    (open_clip) and MedCLIP average them."""

    def __init__(self, sum_directions: bool = False, gather: Gather = GATHER_ALL):
        super().__init__()
        self.sum_directions = sum_directions
        self.gather = gather

    def forward(self, image_features_nd: torch.Tensor, text_features_nd: torch.Tensor,
                logit_scale: torch.Tensor | float) -> torch.Tensor:
        image_features_nd, text_features_nd = self.gather.rows(image_features_nd), self.gather.rows(text_features_nd)
        logits_nn = logit_scale * image_features_nd @ text_features_nd.T
        targets_n = _diagonal_targets(logits_nn)
        total = F.cross_entropy(logits_nn, targets_n) + F.cross_entropy(logits_nn.T, targets_n)
        return total if self.sum_directions else total / 2

    def chance(self, n: int) -> float:
        """The loss of a model that has learned nothing (every logit equal) with n candidates."""
        return (2 if self.sum_directions else 1) * math.log(n)


class WeightedInfoNCE(nn.Module):
    """ConVIRT: ``weight * L(image->text) + (1 - weight) * L(text->image)`` at a fixed temperature."""

    def __init__(self, image_to_text_weight: float = 0.75, temperature: float = 0.1, gather: Gather = GATHER_ALL):
        super().__init__()
        self.weight = image_to_text_weight
        self.temperature = temperature
        self.gather = gather

    def forward(self, image_features_nd: torch.Tensor, text_features_nd: torch.Tensor) -> torch.Tensor:
        image_features_nd, text_features_nd = self.gather.rows(image_features_nd), self.gather.rows(text_features_nd)
        logits_nn = image_features_nd @ text_features_nd.T / self.temperature
        targets_n = _diagonal_targets(logits_nn)
        image_to_text = F.cross_entropy(logits_nn, targets_n)
        text_to_image = F.cross_entropy(logits_nn.T, targets_n)
        return self.weight * image_to_text + (1 - self.weight) * text_to_image

    def chance(self, n: int) -> float:
        return math.log(n)


class NTXentLoss(nn.Module):
    """SimCLR's NT-Xent between two views: each view's positive is the other view of the
    same image, negatives are the other 2N - 2 embeddings; mean over the 2N anchors."""

    def __init__(self, temperature: float = 0.5, gather: Gather = GATHER_ALL):
        super().__init__()
        self.temperature = temperature
        self.gather = gather

    def forward(self, view1_nd: torch.Tensor, view2_nd: torch.Tensor) -> torch.Tensor:
        view1_nd, view2_nd = self.gather.rows(view1_nd), self.gather.rows(view2_nd)
        n = view1_nd.shape[0]
        z_md = torch.cat([view1_nd, view2_nd])  # M = 2N
        sim_mm = z_md @ z_md.T / self.temperature
        sim_mm = sim_mm.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=sim_mm.device), float("-inf"))
        targets_m = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(sim_mm.device)
        return F.cross_entropy(sim_mm, targets_m)

    def chance(self, n: int) -> float:
        return math.log(2 * n - 1)  # the positive among the 2N - 1 other embeddings


class MultiViewClipLoss(nn.Module):
    """Mammo-CLIP: two images of a sample (I1, I2: two views of the breast) and two texts
    (T1, T2). CLIP's loss (``ClipLoss``: the two directions averaged) of the four pairs
    I1-T1, I2-T1, I1-T2, I2-T2, averaged; plus ``image_weight`` times CLIP's loss of I1 vs I2
    and ``text_weight`` times that of T1 vs T2. One scale for all. (The official code
    averages each direction over the pairs and then the directions: the same value.)"""

    def __init__(self, image_weight: float = 1.0, text_weight: float = 0.5, gather: Gather = GATHER_ALL):
        super().__init__()
        self.image_weight = image_weight
        self.text_weight = text_weight
        self.clip = ClipLoss(gather=gather)  # set_gather reaches it as a submodule

    def forward(self, image_nd: torch.Tensor, view_nd: torch.Tensor, text_nd: torch.Tensor, text2_nd: torch.Tensor,
                logit_scale: torch.Tensor | float) -> dict[str, torch.Tensor]:
        pairs = ((image_nd, text_nd), (view_nd, text_nd), (image_nd, text2_nd), (view_nd, text2_nd))
        image_text = sum(self.clip(images_nd, texts_nd, logit_scale) for images_nd, texts_nd in pairs) / 4
        image_image = self.clip(image_nd, view_nd, logit_scale)
        text_text = self.clip(text_nd, text2_nd, logit_scale)
        loss = image_text + self.image_weight * image_image + self.text_weight * text_text
        return {"loss": loss, "image_text": image_text, "image_image": image_image, "text_text": text_text}

    def chance(self, n: int) -> dict[str, float]:
        return {"image_text": self.clip.chance(n), "image_image": self.clip.chance(n), "text_text": self.clip.chance(n)}


def local_alignment_scores(patches_npd: torch.Tensor, sentences_nsd: torch.Tensor,
                           sentence_mask_ns: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """MaMA's two local alignment scores for every (image i, report j) pair, rows = images.

    text->image: for each sentence of j its best-matching patch of i, averaged over j's
    sentences; image->text: for each patch of i its best-matching sentence of j, averaged
    over i's patches. Padded sentences (mask 0) take part in neither."""
    sim_ijps = torch.einsum("ipd,jsd->ijps", patches_npd, sentences_nsd)
    valid_ns = sentence_mask_ns.bool()
    best_patch_ijs = sim_ijps.amax(dim=2)
    counts_j = valid_ns.sum(dim=1).clamp(min=1)
    text_to_image_ij = (best_patch_ijs * valid_ns[None]).sum(-1) / counts_j[None]
    best_sentence_ijp = sim_ijps.masked_fill(~valid_ns[None, :, None, :], float("-inf")).amax(dim=3)
    image_to_text_ij = best_sentence_ijp.mean(dim=2)
    return image_to_text_ij, text_to_image_ij


class LocalAlignmentLoss(nn.Module):
    """MaMA's symmetric local alignment (SLA): each of the two score matrices gets
    cross-entropy both ways; the four terms are summed (official ``model.py``)."""

    def __init__(self, gather: Gather = GATHER_ALL):
        super().__init__()
        self.gather = gather

    def forward(self, patches_npd, sentences_nsd, sentence_mask_ns, logit_scale) -> torch.Tensor:
        patches_npd = self.gather.rows(patches_npd)
        sentences_nsd, sentence_mask_ns = self.gather.padded(sentences_nsd), self.gather.padded(sentence_mask_ns)
        image_to_text_nn, text_to_image_nn = local_alignment_scores(patches_npd, sentences_nsd, sentence_mask_ns)
        targets_n = _diagonal_targets(image_to_text_nn)
        total = image_to_text_nn.new_zeros(())
        for scores_nn in (text_to_image_nn, image_to_text_nn):
            logits_nn = logit_scale * scores_nn
            total = total + F.cross_entropy(logits_nn, targets_n) + F.cross_entropy(logits_nn.T, targets_n)
        return total

    def chance(self, n: int) -> float:
        return 4 * math.log(n)  # four cross-entropies over n


def clipped_weights(weights_nt: torch.Tensor, valid_nt: torch.Tensor, low: float = 0.1,
                    high: float = 0.9) -> torch.Tensor:
    """MGCA's token weights: each sample's valid weights clipped to their own 10 % and 90 %
    quantiles (linear interpolation, as ``torch.quantile``), invalid ones 0, then
    normalised to sum 1 per sample."""
    valid_nt = valid_nt.bool()
    masked = weights_nt.masked_fill(~valid_nt, float("nan"))
    low_n1 = torch.nanquantile(masked, low, dim=1, keepdim=True)
    high_n1 = torch.nanquantile(masked, high, dim=1, keepdim=True)
    clipped = torch.minimum(torch.maximum(weights_nt, low_n1), high_n1) * valid_nt
    return clipped / clipped.sum(dim=1, keepdim=True)


def _weighted_token_contrast(sim_nqq: torch.Tensor, weight_nq: torch.Tensor) -> torch.Tensor:
    """Each query q against every attended context (and each context against every query),
    cross-entropy with target q, weighted per query, summed and divided by N; the mean of
    the two ways (official ``mgca_module.py``)."""
    n, q, _ = sim_nqq.shape
    targets = torch.arange(q, device=sim_nqq.device).repeat(n)
    rows = F.cross_entropy(sim_nqq.reshape(n * q, q), targets, reduction="none")
    cols = F.cross_entropy(sim_nqq.transpose(1, 2).reshape(n * q, q), targets, reduction="none")
    weights = weight_nq.reshape(-1)
    return ((rows * weights).sum() / n + (cols * weights).sum() / n) / 2


class TokenAlignmentLoss(nn.Module):
    """MGCA's token-level alignment, word half plus patch half (summed).

    Word half: each word attends to the patches (softmax of similarity / 0.1), its context
    is L2-normalised, and each sample's words are contrasted with their contexts
    (temperature 0.1), weighted by BERT's [CLS] attention clipped to its 10-90 % quantiles.
    Every word position takes part as a negative, as in the official code (whose padding
    words are the local head applied to zero vectors); ``word_valid_nt`` marks the words
    that are queries and carry weight. Patch half: each patch attends to the valid words
    only (padding keys masked), is contrasted with its context, weighted by the ViT's [CLS]
    attention clipped the same way. The official code L2-normalises the patch context only
    for CNN backbones (``normalize_patch_context``)."""

    def __init__(self, temperature: float = 0.1, normalize_patch_context: bool = False):
        super().__init__()
        self.temperature = temperature
        self.normalize_patch_context = normalize_patch_context

    def forward(self, words_ntd, word_valid_nt, word_attention_nt, patches_npd, patch_attention_np):
        t = self.temperature
        # softmaxes in fp32, as CUDA autocast runs them (CPU autocast would keep bf16)
        attn_ntp = torch.softmax(_at_least_fp32(words_ntd @ patches_npd.transpose(1, 2)) / t, dim=-1)
        word_context_ntd = F.normalize(attn_ntp @ patches_npd, dim=-1)
        word_sim_ntt = words_ntd @ word_context_ntd.transpose(1, 2) / t
        word_weight_nt = clipped_weights(word_attention_nt, word_valid_nt)
        loss_word = _weighted_token_contrast(word_sim_ntt, word_weight_nt)

        sim_npt = (patches_npd @ words_ntd.transpose(1, 2)).masked_fill(~word_valid_nt.bool()[:, None, :],
                                                                         float("-inf"))
        patch_context_npd = torch.softmax(_at_least_fp32(sim_npt) / t, dim=-1) @ words_ntd
        if self.normalize_patch_context:
            patch_context_npd = F.normalize(patch_context_npd, dim=-1)
        patch_sim_npp = patches_npd @ patch_context_npd.transpose(1, 2) / t
        patch_weight_np = clipped_weights(patch_attention_np, torch.ones_like(patch_attention_np))
        loss_patch = _weighted_token_contrast(patch_sim_npp, patch_weight_np)
        return loss_word + loss_patch


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

    def __init__(self, temperature: float = 0.2, epsilon: float = 0.05, iterations: int = 3,
                 gather: Gather = GATHER_ALL):
        super().__init__()
        self.temperature, self.epsilon, self.iterations = temperature, epsilon, iterations
        self.gather = gather

    def forward(self, image_nd, text_nd, prototypes_kd) -> torch.Tensor:
        image_nd, text_nd = self.gather.rows(image_nd), self.gather.rows(text_nd)
        # fp32 scores: the exp of Sinkhorn and the log-softmax run in fp32, as under CUDA autocast
        image_scores_nk = _at_least_fp32(image_nd @ prototypes_kd.T)
        text_scores_nk = _at_least_fp32(text_nd @ prototypes_kd.T)
        image_codes = sinkhorn(image_scores_nk, self.epsilon, self.iterations)
        text_codes = sinkhorn(text_scores_nk, self.epsilon, self.iterations)
        image_logp = F.log_softmax(image_scores_nk / self.temperature, dim=1)
        text_logp = F.log_softmax(text_scores_nk / self.temperature, dim=1)
        return -((text_codes * image_logp).sum(1).mean() + (image_codes * text_logp).sum(1).mean()) / 2

    @staticmethod
    def chance(n_prototypes: int) -> float:
        return math.log(n_prototypes)  # codes summing to 1 against a uniform softmax over K


def semantic_targets(row_labels_nl: torch.Tensor, column_labels_ml: torch.Tensor) -> torch.Tensor:
    """MedCLIP's soft targets: the row-softmax of the raw label-vector dot products
    (official ``losses.py``: ``softmax(img_labels @ text_labels.T)``, no temperature)."""
    # small whole numbers, exact in bf16; the softmax in fp32, as under CUDA autocast
    return torch.softmax((row_labels_nl.float() @ column_labels_ml.float().T).float(), dim=1)


class SemanticMatchingLoss(nn.Module):
    """MedCLIP: soft cross-entropy both ways against label-similarity targets, averaged, so
    a sentence whose labels match an image counts as a positive even when it is not the
    image's own. Each way is summed over its rows and divided by N."""

    def __init__(self, gather: Gather = GATHER_ALL):
        super().__init__()
        self.gather = gather

    def forward(self, image_nd, text_nd, image_labels_nl, text_labels_nl, logit_scale) -> torch.Tensor:
        image_nd, text_nd = self.gather.rows(image_nd), self.gather.rows(text_nd)
        image_labels_nl, text_labels_nl = self.gather.rows(image_labels_nl), self.gather.rows(text_labels_nl)
        # fp32 logits: the log-softmax runs in fp32, as under CUDA autocast (CPU autocast keeps bf16,
        # which rounds the loss to steps of 1/32 and stalls training)
        logits_nn = _at_least_fp32(logit_scale * image_nd @ text_nd.T)
        n = logits_nn.shape[0]
        image_targets = semantic_targets(image_labels_nl, text_labels_nl)
        text_targets = semantic_targets(text_labels_nl, image_labels_nl)
        image_to_text = -(image_targets * F.log_softmax(logits_nn, dim=1)).sum() / n
        text_to_image = -(text_targets * F.log_softmax(logits_nn.T, dim=1)).sum() / n
        return (image_to_text + text_to_image) / 2

    def chance(self, n: int) -> float:
        return math.log(n)  # soft targets summing to 1 against a uniform softmax over n

    @staticmethod
    @torch.no_grad()
    def floor(image_labels_nl, text_labels_nl) -> torch.Tensor:
        """The lowest loss any model can reach on this batch: the soft targets' entropy (a
        soft cross-entropy is never below it). Unscaled label dot products make the
        targets flat, so the floor lies close to chance and the loss moves little."""
        entropies = [-(t * t.clamp_min(1e-12).log()).sum(1).mean()
                     for t in (semantic_targets(image_labels_nl, text_labels_nl),
                               semantic_targets(text_labels_nl, image_labels_nl))]
        return (entropies[0] + entropies[1]) / 2


class CrossViewPatchLoss(nn.Module):
    """GLAM's geometry-guided local contrast for one view: ``patches_npd`` are the view's
    mega-patches, ``gathered_npd`` what the cross-view attention collected for each of them
    from the other view of the same breast (both normalised, positions in the same order).

    - ``position``: within each image, mega-patch p against the collected features of all P
      positions, target p; rows and columns of the P x P matrix, the two averaged; mean over
      the N x P anchors.
    - ``same_position``: at each position p, image i against the collected features of every
      image at p, target i; rows and columns of the N x N matrix, averaged; mean over P x N.
      Its negatives come from every rank (``gather``); the official code used each GPU's.
    GLAM adds each term of the two views averaged (``Glam.training_loss``)."""

    def __init__(self, gather: Gather = GATHER_ALL):
        super().__init__()
        self.gather = gather

    @staticmethod
    def _two_way(logits_bkk: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of every row and of every column (target: the diagonal), averaged."""
        b, k, _ = logits_bkk.shape
        targets = torch.arange(k, device=logits_bkk.device).repeat(b)
        rows = F.cross_entropy(logits_bkk.reshape(b * k, k), targets)
        columns = F.cross_entropy(logits_bkk.transpose(1, 2).reshape(b * k, k), targets)
        return (rows + columns) / 2

    def forward(self, patches_npd: torch.Tensor, gathered_npd: torch.Tensor,
                logit_scale: torch.Tensor | float) -> dict[str, torch.Tensor]:
        position = self._two_way(_at_least_fp32(logit_scale * patches_npd @ gathered_npd.transpose(1, 2)))
        patches_pnd = self.gather.rows(patches_npd).transpose(0, 1)
        gathered_pnd = self.gather.rows(gathered_npd).transpose(0, 1)
        same_position = self._two_way(_at_least_fp32(logit_scale * patches_pnd @ gathered_pnd.transpose(1, 2)))
        return {"position": position, "same_position": same_position}

    def chance(self, n: int, positions: int) -> dict[str, float]:
        return {"position": math.log(positions), "same_position": math.log(n)}
