import torch

from benchmark.data.captions import embed_sentences, join_sentences
from benchmark.data.tokenizer import train_tokenizer
from benchmark.registry import available_models, build_model
from tests.conftest import REC as BASE_REC

REC = BASE_REC | {"density": 2, "birads": 1}


def _model(tmp_path):
    texts = [join_sentences(embed_sentences(REC | {"density": d, "birads": b})) for d in (1, 2, 3, 4) for b in range(7)]
    train_tokenizer(texts, 300, tmp_path / "tok.json")
    torch.manual_seed(0)
    return build_model("clip", "tiny", tokenizer=str(tmp_path / "tok.json")), texts


def test_clip_is_registered():
    assert "clip" in available_models()


def test_contract_shapes_and_normalisation(tmp_path):
    model, texts = _model(tmp_path)
    images = torch.randn(3, 3, model.image_size, model.image_size)
    img = model.encode_image(images)
    txt = model.encode_text(texts[:3])
    assert img.shape == txt.shape == (3, 128)
    assert torch.allclose(img.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(txt.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert model.image_features(images).shape == (3, model.feature_dim)


def test_tiny_preset_overfits_a_fixed_batch(tmp_path):
    model, texts = _model(tmp_path)
    torch.manual_seed(0)
    batch = {"image": torch.randn(16, 3, model.image_size, model.image_size), "caption": texts[:16]}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    first = None
    for _ in range(50):
        loss = model.training_loss(batch)["loss"]
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.7 * first
