"""Every method against its contract and its specification (docs/protocol.md, Methods)."""

import operator

import pytest
import torch

from benchmark.data.captions import embed_sentences, join_sentences
from benchmark.data.images import Augment, image_hw
from benchmark.data.label_report import label_report
from benchmark.data.labels import sentence_label_vector
from benchmark.registry import available_models, build_model
from benchmark.train import BATCH_FIELDS, IMAGE_FIELDS, collate
from tests.conftest import REC

METHODS = ["clip", "convirt", "mgca", "medclip", "mama", "mammoclip", "glam"]


def _batch(model, n=16):
    gen = torch.Generator().manual_seed(0)
    items = []
    for i in range(n):
        rec = REC | {"density": 1 + i % 4, "birads": i % 7}
        sentences = embed_sentences(rec)
        image = torch.randint(0, 255, (1, *image_hw(model.image_size)), generator=gen, dtype=torch.uint8)
        item = {"image": Augment(crop_scale=(1.0, 1.0), jitter=0)(image, gen),
                "view2": Augment(jitter=0)(image, gen), "paired_view": Augment(jitter=0)(image, gen),
                "cc_view": Augment(crop_scale=(1.0, 1.0), jitter=0)(image, gen), "mlo_view": Augment(jitter=0)(image, gen),
                "caption": join_sentences(sentences), "label_report": label_report(rec),
                "random_sentence": sentences[i % 7],
                "label_vector": torch.nn.functional.one_hot(torch.tensor(i % 13), 13).float(),
                "sentence_label_vector": torch.from_numpy(sentence_label_vector(sentences[i % len(sentences)]))}
        items.append({k: v for k, v in item.items() if k in model.batch_needs})
    return collate(items) | {"step": 10_000, "epoch": 1}


def test_every_method_is_registered_and_declares_known_batch_fields():
    assert set(METHODS) <= set(available_models())
    for name in METHODS:
        model_cls = type(build_model(name, "tiny"))
        assert set(model_cls.batch_needs) <= set(BATCH_FIELDS) and set(model_cls.batch_needs) & set(IMAGE_FIELDS)
        assert {"tiny", "paper"} <= set(model_cls.presets)


@pytest.mark.parametrize("name", METHODS)
def test_contract_shapes_and_normalisation(name, tokenizer):
    torch.manual_seed(0)
    model = build_model(name, "tiny", tokenizer=tokenizer).eval()
    images = torch.randn(3, 3, *image_hw(model.image_size))
    with torch.no_grad():
        img = model.encode_image(images)
        txt = model.encode_text(["Breast composition: The breasts are extremely dense."] * 2)
        feats = model.image_features(images)
    assert img.shape[0] == 3 and txt.shape[0] == 2 and img.shape[1] == txt.shape[1]
    assert torch.allclose(img.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(txt.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert feats.shape == (3, model.feature_dim)


@pytest.mark.parametrize("name", METHODS)
def test_tiny_preset_overfits_a_fixed_batch(name, tokenizer):
    torch.manual_seed(0)
    model = build_model(name, "tiny", tokenizer=tokenizer).train()
    batch = _batch(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(50):
        loss = model.training_loss(batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    floor = soft_target_entropy(batch) if name == "medclip" else 0.0
    assert losses[-1] - floor < 0.7 * (losses[0] - floor), (name, losses[0], losses[-1], floor)


def soft_target_entropy(batch: dict) -> float:
    """The least value MedCLIP's soft cross-entropy can take: its targets' mean entropy
    (its label-softmax targets are far from one-hot, so the loss cannot fall near 0)."""
    from models.losses import semantic_targets

    image, text = batch["label_vector"], batch["sentence_label_vector"]
    entropies = [-(t * t.log()).sum(1).mean() for t in (semantic_targets(image, text), semantic_targets(text, image))]
    return float(sum(entropies) / 2)


def test_mama_text_encoder_trains_only_lora_and_projections(tokenizer):
    model = build_model("mama", "tiny", tokenizer=tokenizer).train()
    model.training_loss(_batch(model, n=8))["loss"].backward()
    for name, p in model.text.model.named_parameters():
        assert (p.grad is not None) == ("lora_" in name), name
    trainable, _ = model.text.model.get_nb_trainable_parameters()
    assert trainable == sum(p.numel() for p in model.text.parameters() if p.requires_grad) > 0
    assert all(p.requires_grad for p in model.text_head.parameters())
    # the image encoder is fully trained except its final norm, frozen as the official --pool_feat does
    assert all(p.requires_grad != name.startswith("norm.") for name, p in model.visual.named_parameters())


def test_mama_late_losses_start_at_their_step(tokenizer):
    model = build_model("mama", "tiny", tokenizer=tokenizer).train()
    batch = _batch(model, n=8)
    early = model.training_loss(batch | {"step": model.late_loss_start_step - 1})
    late = model.training_loss(batch | {"step": model.late_loss_start_step})
    assert set(early) == {"loss", "clip_view1"}
    assert {"ntxent", "clip_view2", "sla"} <= set(late)


def test_convirt_freezes_embeddings_and_first_layers(tokenizer):
    model = build_model("convirt", "tiny", tokenizer=tokenizer)
    assert not any(p.requires_grad for p in model.text.model.embeddings.parameters())
    assert model.trainable_text_layers() == len(model.text.model.encoder.layer) - 1


# Published backbone sizes (parameters, without classifier heads), built on the meta device.
# BioMedLM is called 2.7B; its config (2560 wide, 32 layers, 28,896 tokens) holds 2.59 B.
PAPER_SIZES = {
    "clip": [("clip.visual", 86.2e6), ("clip.transformer", 37.8e6)],
    "mama": [("visual", 86.6e6), ("text", 2.59e9)],
    "mgca": [("visual", 85.8e6), ("text", 109e6)],
    "convirt": [("visual", 23.5e6), ("text", 109e6)],
    "medclip": [("visual", 27.5e6), ("text", 109e6)],
    "mammoclip": [("visual", 28.3e6), ("text", 109e6)],  # EfficientNet-B5 without its classifier
    "glam": [("visual", 86.6e6), ("text", 65.2e6)],  # the first 6 of Bio_ClinicalBERT's 12 layers
}


@pytest.mark.parametrize("name", sorted(PAPER_SIZES))
def test_paper_presets_build_on_meta_with_published_sizes(name):
    with torch.device("meta"):
        model = build_model(name, "paper")
    for part, expected in PAPER_SIZES[name]:
        count = sum(p.numel() for p in operator.attrgetter(part)(model).parameters())
        assert count == pytest.approx(expected, rel=0.03), (name, part, count)


def test_mama_paper_lora_count_equals_peft():
    with torch.device("meta"):
        model = build_model("mama", "paper")
    trainable, total = model.text.model.get_nb_trainable_parameters()
    # r 8 on c_attn (2560 -> 3 x 2560) in 32 blocks: 32 * 8 * (2560 + 7680)
    assert trainable == 32 * 8 * (2560 + 7680)
    assert trainable == sum(p.numel() for p in model.text.parameters() if p.requires_grad)
    assert model.image_size == 518 and model.visual.patch_embed.num_patches == 37 * 37


def test_glam_paper_preset_pools_81_mega_patches_from_the_37_by_37_grid():
    with torch.device("meta"):
        model = build_model("glam", "paper")
    assert model.image_size == 518 and model.visual.patch_embed.num_patches == 37 * 37
    assert model.grid == 9 and model.pool_cc.query.shape == (81, 768)  # (37 // 4)^2 queries
    assert len(model.text.model.encoder.layer) == 6 and model.text.model.config.num_hidden_layers == 6
    assert all(p.requires_grad for p in model.parameters())  # nothing frozen: --late_loss -1


def test_text_layers_keep_the_first_layers_and_refuse_more_than_the_encoder_has(tokenizer):
    from benchmark.errors import BenchmarkError

    model = build_model("glam", "tiny", tokenizer=tokenizer)  # the tiny BERT's 2 layers, 1 kept
    assert len(model.text.model.encoder.layer) == model.text.model.config.num_hidden_layers == 1
    with pytest.raises(BenchmarkError, match=r"^Glam text encoder: layers 3 but the encoder has only 2$"):
        build_model("glam", "tiny", tokenizer=tokenizer, text={"layers": 3})


def _gpt2_folder_without_separator(folder, texts):
    """A Hugging Face GPT-2 folder whose byte-level BPE tokenizer has no separator token
    (BioMedLM's situation), with small random weights."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2Model, GPT2TokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=2000, special_tokens=["<|endoftext|>"], show_progress=False)
    folder.mkdir()
    bpe.save_model(str(folder))
    bpe.save(str(folder / "tokenizer.json"))  # from vocab and merges alone the locked transformers builds a 1-token vocabulary
    tokenizer = GPT2TokenizerFast(tokenizer_file=str(folder / "tokenizer.json"), vocab_file=str(folder / "vocab.json"),
                                  merges_file=str(folder / "merges.txt"), bos_token="<|endoftext|>",
                                  eos_token="<|endoftext|>", unk_token="<|endoftext|>")
    assert len(tokenizer) > 100, "the test tokenizer must have the captions' vocabulary, as BioMedLM's has"
    tokenizer.save_pretrained(folder)
    GPT2Model(GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=1, n_head=2, n_positions=160)).save_pretrained(folder)
    return tokenizer


def test_mama_adds_the_official_special_tokens_to_a_gpt2_tokenizer_without_a_separator(tmp_path):
    captions = [join_sentences(embed_sentences(REC | {"density": 1 + i % 4, "birads": i % 7})) for i in range(8)]
    original = _gpt2_folder_without_separator(tmp_path / "biomedlm", captions)
    assert original.sep_token is None
    model = build_model("mama", "tiny", weights={"text": str(tmp_path / "biomedlm")}).train()
    tokenizer = model.text.hf_tokenizer
    assert model.sep_id is not None and tokenizer.sep_token == "[SEP]"
    assert len(tokenizer) == len(original) + 6  # bos, pad, mask, sep, unk and one extra, as the official code adds
    assert model.text.model.get_input_embeddings().num_embeddings == len(tokenizer)
    ids, _ = model.text.tokenize(captions[:1])
    assert ids[0, 0] == tokenizer.bos_token_id and (ids[0] == model.sep_id).sum() == 7
    words = [i for i in ids[0].tolist() if i not in tokenizer.all_special_ids]
    assert len(words) > 40, "the caption must reach the model as words, not as special tokens only"
    batch = _batch(model, n=8)
    out = model.training_loss(batch)  # step 10,000: the late losses run and need the separators
    assert {"ntxent", "clip_view2", "sla"} <= set(out) and torch.isfinite(out["loss"])


def test_mama_text_pool_official_averages_padding_and_tokens_option_does_not(tokenizer):
    official = build_model("mama", "tiny", tokenizer=tokenizer).eval()
    tokens = build_model("mama", "tiny", tokenizer=tokenizer, text_pool="tokens").eval()
    tokens.load_state_dict(official.state_dict())
    hidden = torch.randn(2, 6, official.text.width)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]])
    moved = hidden.clone()
    moved[0, 3:] += 5.0  # only the padding of the first caption
    with torch.no_grad():
        assert not torch.allclose(official.project_text(hidden, mask)[0], official.project_text(moved, mask)[0])
        assert torch.allclose(tokens.project_text(hidden, mask), tokens.project_text(moved, mask))


def test_mammoclip_paper_presets_are_the_official_backbones_size_and_statistics():
    with torch.device("meta"):
        b5, b2 = build_model("mammoclip", "paper"), build_model("mammoclip", "paper_b2")
    assert (b5.feature_dim, b2.feature_dim) == (2048, 1408)
    assert sum(p.numel() for p in b2.visual.parameters()) == pytest.approx(7.70e6, rel=0.03)
    assert image_hw(b5.image_size) == (1520, 912) and b5.text.context_length == 256
    assert b5.image_mean == pytest.approx((0.3089,) * 3, abs=1e-4) and b5.image_std == pytest.approx((0.2505,) * 3, abs=1e-4)
    assert (b5.visual.drop_rate, b2.visual.drop_rate) == (0.4, 0.3)
    assert b5.train_settings["lr"] == 5e-5 and b5.train_settings["weight_decay"] == 1e-4


@pytest.mark.parametrize("name", METHODS)
def test_the_image_text_term_sits_at_its_chance_level_when_every_sample_is_the_same(name, tokenizer):
    """``chance_losses`` names the level of a model that tells no sample from another: a
    batch of 16 copies of one sample gives equal logits, so the image-text term equals the
    declared level (a level off by a factor, e.g. one direction where the loss sums two,
    fails)."""
    model = build_model(name, "tiny", tokenizer=tokenizer).eval()
    one = _batch(model, n=1)
    batch = {k: (v.expand(16, *v.shape[1:]) if torch.is_tensor(v) and v.dim() else v * 16 if isinstance(v, list)
                 else v) for k, v in one.items()}
    chance = model.chance_losses(16)
    with torch.no_grad():
        term = float(model.training_loss(batch)[model.image_text_term])
    assert term == pytest.approx(chance[model.image_text_term], rel=1e-4)
