import math

import pytest
import torch
import torch.nn.functional as F

from models.losses import (
    LocalAlignmentLoss,
    NTXentLoss,
    PrototypeLoss,
    SemanticMatchingLoss,
    TokenAlignmentLoss,
    WeightedInfoNCE,
    local_alignment_scores,
    semantic_targets,
    sinkhorn,
)


def _unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_convirt_weights_image_to_text_three_to_one():
    image, text = _unit(8, 16, seed=4), _unit(8, 16, seed=5)
    logits = image @ text.T / 0.1
    targets = torch.arange(8)
    i2t, t2i = F.cross_entropy(logits, targets), F.cross_entropy(logits.T, targets)
    assert i2t.item() != pytest.approx(t2i.item())
    ours = WeightedInfoNCE(0.75, 0.1)(image, text)
    assert ours.item() == pytest.approx((0.75 * i2t + 0.25 * t2i).item(), abs=1e-6)


def test_ntxent_prefers_matching_views():
    view1 = _unit(8, 16, seed=6)
    aligned = NTXentLoss(0.5)(view1, view1)
    shuffled = NTXentLoss(0.5)(view1, view1[torch.randperm(8, generator=torch.Generator().manual_seed(0))])
    assert aligned < shuffled


def test_sinkhorn_codes_meet_their_marginals():
    scores = _unit(64, 16, seed=7) @ _unit(10, 16, seed=8).T
    codes = sinkhorn(scores, epsilon=0.05, iterations=3)
    assert torch.allclose(codes.sum(1), torch.ones(64), atol=1e-5)  # each sample a distribution
    # after 3 iterations the prototype marginal is close to uniform (exact in the limit)
    assert torch.allclose(codes.sum(0) / 64, torch.full((10,), 0.1), atol=0.05)
    many = sinkhorn(scores, epsilon=0.05, iterations=200)
    assert torch.allclose(many.sum(0) / 64, torch.full((10,), 0.1), atol=1e-3)


def test_prototype_loss_is_finite_and_differentiable():
    protos = torch.nn.Parameter(_unit(10, 16, seed=9))
    loss = PrototypeLoss()(_unit(8, 16, seed=10), _unit(8, 16, seed=11), protos)
    loss.backward()
    assert torch.isfinite(loss) and protos.grad.abs().sum() > 0


def test_sla_scores_match_a_hand_computed_example():
    # 2 images x 2 patches, 2 reports x 2 sentences, 2-d unit vectors
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    diag = F.normalize(torch.tensor([1.0, 1.0]), dim=0)
    patches = torch.stack([torch.stack([e1, e2]), torch.stack([e1, e1])])  # image 0: e1, e2; image 1: e1, e1
    sentences = torch.stack([torch.stack([e1, diag]), torch.stack([e2, e2])])  # report 0: e1, d; report 1: e2, e2
    mask = torch.ones(2, 2)
    i2t, t2i = local_alignment_scores(patches, sentences, mask)
    c = 2 ** -0.5
    # text->image: best patch per sentence, mean over the report's sentences
    expected_t2i = torch.tensor([[(1 + c) / 2, 1.0], [(1 + c) / 2, 0.0]])
    # image->text: best sentence per patch, mean over the image's patches
    expected_i2t = torch.tensor([[(1 + c) / 2, (0 + 1) / 2], [1.0, 0.0]])
    assert torch.allclose(t2i, expected_t2i, atol=1e-6)
    assert torch.allclose(i2t, expected_i2t, atol=1e-6)


def test_sla_is_invariant_to_patch_order_and_ignores_padding_sentences():
    patches, sentences = _unit(4, 9, 8, seed=12), _unit(4, 3, 8, seed=13)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 0], [1, 1, 1]], dtype=torch.float)
    i2t, t2i = local_alignment_scores(patches, sentences, mask)
    perm = torch.randperm(9, generator=torch.Generator().manual_seed(1))
    i2t_p, t2i_p = local_alignment_scores(patches[:, perm], sentences, mask)
    assert torch.allclose(i2t, i2t_p, atol=1e-6) and torch.allclose(t2i, t2i_p, atol=1e-6)
    garbage = sentences.clone()
    garbage[1, 2] = _unit(8, seed=14)
    i2t_g, t2i_g = local_alignment_scores(patches, garbage, mask)
    assert torch.allclose(i2t, i2t_g) and torch.allclose(t2i, t2i_g)
    loss = LocalAlignmentLoss()(patches, sentences, mask, 1 / 0.07)
    assert torch.isfinite(loss)


def test_medclip_targets_are_the_softmax_of_label_dot_products():
    labels = torch.eye(3)
    e = math.e
    assert torch.allclose(semantic_targets(labels, labels), torch.tensor(
        [[e, 1, 1], [1, e, 1], [1, 1, e]]) / (e + 2), atol=1e-6)
    # a sentence stating no label leaves its column uniform; more shared labels, more mass
    rows = torch.tensor([[1.0, 1.0, 0.0]])
    columns = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    targets = semantic_targets(rows, columns)[0]
    assert targets[0] > targets[1] > targets[2]
    image, text = _unit(3, 16, seed=15), _unit(3, 16, seed=16)
    assert torch.isfinite(SemanticMatchingLoss()(image, text, labels, labels, 10.0))


def test_medclip_floor_is_the_targets_entropy_and_bounds_the_loss():
    gen = torch.Generator().manual_seed(7)
    image_labels, text_labels = (torch.rand(16, 14, generator=gen) > 0.7).float(), (torch.rand(16, 14, generator=gen) > 0.7).float()
    loss_fn = SemanticMatchingLoss()
    floor = loss_fn.floor(image_labels, text_labels)
    assert floor < loss_fn.chance(16)  # the targets are not uniform
    for seed in range(5):  # no embedding goes below the floor
        assert loss_fn(_unit(16, 8, seed=seed), _unit(16, 8, seed=seed + 50), image_labels, text_labels, 10.0) >= floor
    # symmetric labels (each image's texts are its own): logits equal to log-targets reach it
    targets = semantic_targets(image_labels, image_labels)
    logits = targets.log()
    reached = -(targets * F.log_softmax(logits, 1)).sum() / 16
    assert reached == pytest.approx(float(loss_fn.floor(image_labels, image_labels)), abs=1e-5)


@pytest.mark.parametrize("loss_name", ["semantic", "prototype"])
def test_softmax_losses_keep_fp32_precision_under_cpu_bf16_autocast(loss_name):
    """CPU autocast keeps log-softmax in bf16 (CUDA runs it in fp32); MedCLIP's loss then
    moved in steps of 1/32 and its training stalled. The losses compute it in fp32."""
    gen = torch.Generator().manual_seed(3)
    image, text = _unit(64, 32, seed=1), _unit(64, 32, seed=2)
    labels = (torch.rand(64, 14, generator=gen) > 0.7).float()
    if loss_name == "semantic":
        run = lambda a, b: SemanticMatchingLoss()(a, b, labels, labels.flip(0), torch.tensor(14.3))  # noqa: E731
    else:
        prototypes = _unit(20, 32, seed=3)
        run = lambda a, b: PrototypeLoss()(a, b, prototypes)  # noqa: E731
    reference = run(image, text)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = run(image, text)
    assert mixed.dtype == torch.float32
    # bf16 inputs to the matmul only: far below the 1/32 steps of a bf16 loss
    assert float(mixed) == pytest.approx(float(reference), abs=5e-3)


def test_token_alignment_prefers_aligned_tokens():
    words = _unit(2, 5, 16, seed=17)
    valid = torch.ones(2, 5)
    attention = torch.rand(2, 5, generator=torch.Generator().manual_seed(3)) + 0.1
    aligned = TokenAlignmentLoss()(words, valid, attention, words.clone(), attention)
    random = TokenAlignmentLoss()(words, valid, attention, _unit(2, 5, 16, seed=18), attention)
    assert aligned < random


def test_each_loss_chance_level_is_its_value_when_nothing_is_learned():
    """``chance``: the loss when every logit is equal (all embeddings the same), which a
    model that learned nothing from its pretraining task sits at."""
    from models.losses import ClipLoss, MultiViewClipLoss

    n, same = 12, F.normalize(torch.ones(12, 16), dim=-1)
    for loss in (ClipLoss(), ClipLoss(sum_directions=True)):
        assert loss(same, same, 14.3).item() == pytest.approx(loss.chance(n), rel=1e-6)
    assert WeightedInfoNCE()(same, same).item() == pytest.approx(WeightedInfoNCE().chance(n), rel=1e-6)
    assert NTXentLoss()(same, same).item() == pytest.approx(math.log(2 * n - 1), rel=1e-6)
    assert NTXentLoss().chance(n) == pytest.approx(math.log(2 * n - 1))
    labels = torch.randint(0, 2, (n, 5), generator=torch.Generator().manual_seed(0))
    semantic = SemanticMatchingLoss()
    assert semantic(same, same, labels, labels, 10.0).item() == pytest.approx(semantic.chance(n), rel=1e-6)
    patches, sentences = same[:, None].expand(n, 9, 16), same[:, None].expand(n, 3, 16)
    sla = LocalAlignmentLoss()
    assert sla(patches, sentences, torch.ones(n, 3), 10.0).item() == pytest.approx(sla.chance(n), rel=1e-6)
    multi = MultiViewClipLoss()
    terms = multi(same, same, same, same, 10.0)
    assert {k: terms[k].item() for k in multi.chance(n)} == pytest.approx(multi.chance(n), rel=1e-6)
    prototypes = torch.zeros(7, 16)  # every prototype scores every sample alike
    prototype = PrototypeLoss()
    assert prototype(same, same, prototypes).item() == pytest.approx(prototype.chance(7), rel=1e-5)

