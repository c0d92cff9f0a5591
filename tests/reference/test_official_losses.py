"""Each method's loss against an independent reference written from its official code's
equations (tests/reference/official.py): identical float64 inputs with padding, ties and
unequal sentence counts; equal values and gradients to 1e-6."""

import pytest
import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss as OpenClipLoss

from models.losses import (
    ClipLoss,
    LocalAlignmentLoss,
    MultiViewClipLoss,
    NTXentLoss,
    PrototypeLoss,
    SemanticMatchingLoss,
    TokenAlignmentLoss,
    WeightedInfoNCE,
    sinkhorn,
)
from tests.reference import official

TOL = 1e-6


def leaf(*shape, seed, unit=True):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return (F.normalize(x, dim=-1) if unit else x).requires_grad_(True)


def assert_same(ours: torch.Tensor, ref: torch.Tensor, inputs: list[torch.Tensor]):
    assert ours.item() == pytest.approx(ref.item(), abs=TOL, rel=TOL)
    grads_ours = torch.autograd.grad(ours, inputs, retain_graph=True, allow_unused=True)
    grads_ref = torch.autograd.grad(ref, inputs, retain_graph=True, allow_unused=True)
    for g_ours, g_ref in zip(grads_ours, grads_ref):
        g_ours = torch.zeros_like(g_ref) if g_ours is None else g_ours
        g_ref = torch.zeros_like(g_ours) if g_ref is None else g_ref
        assert torch.allclose(g_ours, g_ref, atol=TOL, rtol=TOL), (g_ours - g_ref).abs().max()


def test_clip_equals_open_clip_and_the_hand_reference():
    image, text = leaf(12, 16, seed=0), leaf(12, 16, seed=1)
    scale = torch.tensor(1 / 0.07, dtype=torch.float64, requires_grad=True)
    ours = ClipLoss()(image, text, scale)
    assert_same(ours, OpenClipLoss()(image, text, scale), [image, text, scale])
    assert_same(ours, sum(official.clip_pair(image, text, scale)) / 2, [image, text, scale])
    assert_same(ClipLoss(sum_directions=True)(image, text, scale), sum(official.clip_pair(image, text, scale)),
                [image, text, scale])


def test_convirt_weighted_infonce_equals_the_paper_equation():
    image, text = leaf(10, 8, seed=2), leaf(10, 8, seed=3)
    i2t, t2i = official.clip_pair(image, text, 1 / 0.1)
    assert_same(WeightedInfoNCE(0.75, 0.1)(image, text), 0.75 * i2t + 0.25 * t2i, [image, text])


def test_mammoclip_multi_view_loss_equals_the_official_forward():
    image, view, text, text2 = (leaf(10, 8, seed=s) for s in (20, 21, 22, 23))
    scale = torch.tensor(1 / 0.07, dtype=torch.float64, requires_grad=True)
    inputs = [image, view, text, text2, scale]
    terms = MultiViewClipLoss(image_weight=1.0, text_weight=0.5)(image, view, text, text2, scale)
    assert_same(terms["loss"], official.mammoclip_loss(image, view, text, text2, scale), inputs)
    # each term on its own: weights that single it out
    assert_same(terms["image_text"], official.mammoclip_loss(image, view, text, text2, scale, 0.0, 0.0), inputs)
    assert_same(terms["image_image"], official.mammoclip_loss(image, view, text, text2, scale, 1.0, 0.0)
                - official.mammoclip_loss(image, view, text, text2, scale, 0.0, 0.0), inputs)
    assert_same(terms["text_text"], official.mammoclip_loss(image, view, text, text2, scale, 0.0, 1.0)
                - official.mammoclip_loss(image, view, text, text2, scale, 0.0, 0.0), inputs)


def test_ntxent_equals_lightly_formulation():
    out0, out1 = leaf(9, 8, seed=4, unit=False), leaf(9, 8, seed=5, unit=False)
    ours = NTXentLoss(0.5)(F.normalize(out0, dim=-1), F.normalize(out1, dim=-1))
    assert_same(ours, official.ntxent(out0, out1, 0.5), [out0, out1])


def _reports(n=6, d=8):
    """Reports of 1 to 4 sentences, padded; a tie (two identical sentences) in report 0."""
    counts = [3, 1, 4, 2, 4, 2][:n]
    sentences = [leaf(c, d, seed=100 + j) for j, c in enumerate(counts)]
    with torch.no_grad():
        sentences[0][1] = sentences[0][0]  # tie: max over sentences has two arg-maxes
    padded = torch.zeros(n, max(counts), d, dtype=torch.float64)
    mask = torch.zeros(n, max(counts), dtype=torch.float64)
    for j, s in enumerate(sentences):
        padded[j, :len(s)] = s
        mask[j, :len(s)] = 1
    padded[mask == 0] = 0.3  # garbage in the padding: must not matter
    return sentences, padded, mask


def test_mama_sla_and_total_equal_the_official_forward():
    n, p, d = 6, 5, 8
    sentences, padded, mask = _reports(n, d)
    patches = leaf(n, p, d, seed=10)
    image1, image2, text = leaf(n, d, seed=11), leaf(n, d, seed=12), leaf(n, d, seed=13)
    ntx1, ntx2 = leaf(n, d, seed=14, unit=False), leaf(n, d, seed=15, unit=False)
    scale = torch.tensor(1 / 0.07, dtype=torch.float64, requires_grad=True)
    local_scale = torch.tensor(12.0, dtype=torch.float64, requires_grad=True)

    sla = LocalAlignmentLoss()(patches, padded, mask, local_scale)
    ref = official.mama_total(image1, image2, text, ntx1, ntx2, list(patches), sentences, scale, local_scale)
    assert_same(sla, ref["sla"], [patches, local_scale])
    clip = ClipLoss(sum_directions=True)
    ours = {"clip_view1": clip(image1, text, scale),
            "ntxent": NTXentLoss(0.5)(F.normalize(ntx2, dim=-1), F.normalize(ntx1, dim=-1)),
            "clip_view2": clip(image2, text, scale), "sla": sla}
    for name, value in ours.items():
        assert value.item() == pytest.approx(ref[name].item(), abs=TOL)
    assert_same(sum(ours.values()), ref["loss"], [patches, image1, image2, text, ntx1, ntx2, scale, local_scale])


def test_mama_term_weights_count_four_sla_and_two_clip_cross_entropies():
    """With every score equal, each cross-entropy is ln N: the official weights make SLA
    4 ln N, each CLIP term 2 ln N and NT-Xent ln(2N - 1)."""
    n, d = 5, 4
    same = torch.ones(n, d, dtype=torch.float64) / 2
    patches, sentences, mask = torch.ones(n, 3, d) / 2, torch.ones(n, 2, d) / 2, torch.ones(n, 2)
    log_n = torch.log(torch.tensor(float(n))).item()
    assert LocalAlignmentLoss()(patches, sentences, mask, 10.0).item() == pytest.approx(4 * log_n)
    assert ClipLoss(sum_directions=True)(same, same, 10.0).item() == pytest.approx(2 * log_n)
    assert NTXentLoss(0.5)(same, same).item() == pytest.approx(torch.log(torch.tensor(2.0 * n - 1)).item())


def _mgca_inputs(n=4, w=7, p=6, d=8):
    words = leaf(n, w, d, seed=20)
    is_pad = torch.zeros(n, w, dtype=torch.bool)
    for b, length in enumerate([7, 4, 5, 2][:n]):
        is_pad[b, length:] = True
    word_attention = torch.rand(n, w, generator=torch.Generator().manual_seed(21), dtype=torch.float64) + 0.01
    word_attention[1, :3] = 0.2  # ties in the quantiles
    word_attention = word_attention.masked_fill(is_pad, 0.0)
    patches = leaf(n, p, d, seed=22)
    patch_attention = torch.rand(n, p, generator=torch.Generator().manual_seed(23), dtype=torch.float64) + 0.01
    return words, is_pad, word_attention, patches, patch_attention


def test_mgca_token_loss_equals_the_official_forward():
    words, is_pad, word_attention, patches, patch_attention = _mgca_inputs()
    ours = TokenAlignmentLoss(0.1)(words, (~is_pad).double(), word_attention, patches, patch_attention)
    ref = official.mgca_token(words, word_attention, is_pad, patches, patch_attention)
    assert_same(ours, ref, [words, patches])


def test_mgca_prototype_and_sinkhorn_equal_the_official_code():
    image, text, prototypes = leaf(8, 6, seed=30), leaf(8, 6, seed=31), leaf(5, 6, seed=32)
    scores = (image @ prototypes.T).detach()
    assert torch.allclose(sinkhorn(scores), official.mgca_sinkhorn(scores), atol=1e-12)
    assert_same(PrototypeLoss()(image, text, prototypes), official.mgca_prototype(image, text, prototypes),
                [image, text, prototypes])
    assert_same(ClipLoss(sum_directions=True)(image, text, 1 / 0.07), official.mgca_instance(image, text),
                [image, text])


def test_medclip_semantic_matching_equals_the_official_soft_clip_loss():
    n = 7
    image, text = leaf(n, 8, seed=40), leaf(n, 8, seed=41)
    gen = torch.Generator().manual_seed(42)
    image_labels = (torch.rand(n, 13, generator=gen) < 0.3).double()
    text_labels = (torch.rand(n, 13, generator=gen) < 0.3).double()
    text_labels[2] = 0  # a sentence stating no label: uniform targets
    image_labels[3] = image_labels[4]  # tie: two images with the same labels
    scale = torch.tensor(1 / 0.07, dtype=torch.float64, requires_grad=True)
    ours = SemanticMatchingLoss()(image, text, image_labels, text_labels, scale)
    assert_same(ours, official.medclip_soft_clip(image, text, image_labels, text_labels, scale),
                [image, text, scale])


def _perturb_padding_hidden_states(model, captions, seed=0):
    """A forward hook that adds noise to the text encoder's last hidden states at the
    padding positions of ``captions`` only."""
    _, mask = model.text.tokenize(captions)
    noise = torch.randn(*mask.shape, model.text.width, generator=torch.Generator().manual_seed(seed))

    def hook(module, inputs, output):
        output.last_hidden_state = output.last_hidden_state + noise * (mask == 0)[..., None]
        return output

    return model.text.model.register_forward_hook(hook)


def test_mgca_loss_does_not_move_when_padding_hidden_states_change(tokenizer):
    from benchmark.registry import build_model
    from tests.test_models import _batch

    model = build_model("mgca", "tiny", tokenizer=tokenizer).train()
    batch = _batch(model, n=8)
    assert (model.text.tokenize(batch["caption"])[1] == 0).any()  # there is padding to perturb

    def loss():
        torch.manual_seed(0)  # the same dropout masks
        return model.training_loss(batch)

    base = loss()
    handle = _perturb_padding_hidden_states(model, batch["caption"])
    moved = loss()
    handle.remove()
    for name in ("loss", "instance", "token", "prototype"):  # a float32 ulp at 16 is 2e-6: relative, too
        assert moved[name].item() == pytest.approx(base[name].item(), rel=1e-6, abs=1e-6), name


def _glam_case(tokenizer, n: int, mega_patch: int, seed: int):
    """Tiny GLAM in float64 (eval: no dropout, batch norm from its running statistics, so
    both computations see the same modules), a batch of n CC/MLO pairs, and the reference's
    modules: the same ones, except the official attentional poolers, loaded with ours."""
    from benchmark.registry import build_model
    from tests.test_models import _batch

    torch.manual_seed(seed)
    model = build_model("glam", "tiny", tokenizer=tokenizer, mega_patch=mega_patch).double().eval()
    batch = _batch(model, n=n)
    for view in ("cc_view", "mlo_view"):
        batch[view] = batch[view].double().requires_grad_(True)
    poolers = {}
    for name, ours in (("merge_patch1", model.pool_cc), ("merge_patch2", model.pool_mlo)):
        poolers[name] = official.GlamAttentionalPooler(model.feature_dim, model.feature_dim, 8, model.grid ** 2).double()
        poolers[name].load_state_dict(ours.state_dict())
    modules = {"global_embed": model.image_head, "text_global_embed": model.text_head, "simclr_proj": model.ntxent_head,
               "patch_ln": model.patch_norm, "view_attn1": model.attend_cc_to_mlo, "view_attn2": model.attend_mlo_to_cc,
               "logit_scale": model.logit_scale, "patch_scale": model.patch_logit_scale, **poolers}
    return model, batch, modules


def _glam_reference(model, batch, modules, **kwargs) -> dict:
    """The official encoders' outputs (DINOv2's x_norm_clstoken and x_norm_patchtokens, the
    text [CLS]), then the official forward."""
    prefix = 1 + model.visual.num_reg_tokens
    cc, mlo = (model.visual.forward_features(batch[v]) for v in ("cc_view", "mlo_view"))
    report = model.text(batch["caption"])[0].last_hidden_state[:, 0]
    return official.glam_forward(cc[:, 0], cc[:, prefix:], mlo[:, 0], mlo[:, prefix:], report, modules, **kwargs)


@pytest.mark.parametrize("n, mega_patch, seed", [(3, 2, 0), (5, 2, 1), (4, 3, 2), (2, 1, 3)])
def test_glam_terms_and_total_equal_the_official_forward(tokenizer, n, mega_patch, seed):
    """Batch sizes 2 to 5, mega-patch grids of 2 x 2 to 6 x 6: every term and the total, and
    the gradients of the total with respect to every weight and both views' pixels."""
    model, batch, modules = _glam_case(tokenizer, n, mega_patch, seed)
    ours, ref = model.loss_terms(batch), _glam_reference(model, batch, modules)
    for name in ("clip", "ntxent", "patch_position", "patch_same_position"):
        assert ours[name].item() == pytest.approx(ref[name].item(), abs=TOL, rel=TOL), name
    shared = [p for n_, p in model.named_parameters() if p.requires_grad and not n_.startswith("pool_")]
    assert_same(ours["loss"], ref["loss"], shared + [batch["cc_view"], batch["mlo_view"]])
    for ours_pool, ref_pool in ((model.pool_cc, modules["merge_patch1"]), (model.pool_mlo, modules["merge_patch2"])):
        grads_ours = torch.autograd.grad(ours["loss"], list(ours_pool.parameters()), retain_graph=True)
        grads_ref = torch.autograd.grad(ref["loss"], list(ref_pool.parameters()), retain_graph=True)
        for g_ours, g_ref in zip(grads_ours, grads_ref):
            assert torch.allclose(g_ours, g_ref, atol=TOL, rtol=TOL), (g_ours - g_ref).abs().max()


def test_glam_reference_moves_with_any_term_weight_and_with_the_pairing_of_positions(tokenizer):
    """What makes the equality above a test of the weights and the pairing: the official
    forward with any one term's weight changed, or with rows attending to rows instead of
    columns to columns, gives another total than this project's."""
    model, batch, modules = _glam_case(tokenizer, 4, 2, 5)
    ours = model.loss_terms(batch)["loss"].item()
    assert _glam_reference(model, batch, modules)["loss"].item() == pytest.approx(ours, abs=TOL)
    for term in official.GLAM_WEIGHTS:
        changed = dict(official.GLAM_WEIGHTS, **{term: 0.5})
        assert abs(_glam_reference(model, batch, modules, weights=changed)["loss"].item() - ours) > 1e-3, term
    assert abs(_glam_reference(model, batch, modules, columns=False)["loss"].item() - ours) > 1e-3
