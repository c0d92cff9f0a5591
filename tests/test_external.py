"""External checkpoints (benchmark/external.py): each publisher's format, saved by the
publisher's own code with random weights, gives the same embeddings here as in that code."""

import importlib.util
import json
import re
import sys
import types
from pathlib import Path

import pytest
import torch

from benchmark.checkpoint import load_checkpoint, save_checkpoint
from benchmark.errors import BenchmarkError
from benchmark.external import check_external, check_external_formats, import_checkpoint
from benchmark.registry import build_model
from benchmark.test_weights import SMOKE_OPEN_CLIP, _bert_folder, _corpus

TEXTS = ["mass in the left breast. birads 4.", "no mammographic evidence of malignancy. birads 1."]


def _config(tmp_path, **entry) -> dict:
    return {"models": {"ext": entry}, "stats": {}, "results": str(tmp_path)}


def _imported(tmp_path, **entry):
    import_checkpoint(_config(tmp_path, **entry), "ext", 0, tmp_path / "ckpt")
    return load_checkpoint(tmp_path / "ckpt"), json.loads((tmp_path / "ckpt" / "ledger.json").read_text())


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bert") / "Bio_ClinicalBERT"
    torch.manual_seed(0)
    _bert_folder(folder, _corpus())
    return folder


# --- Mammo-CLIP: the official BreastClip (the mammoclip package's codebase/) ------------------

def _mammoclip_codebase():
    """The package's ``breastclip.model`` without ``breastclip/__init__`` (which imports its
    trainer and tensorboard): the model code only."""
    spec = importlib.util.find_spec("codebase")
    if spec is None:
        pytest.skip("the mammoclip package is not installed (pip install -e '.[test]')")
    root = Path(spec.submodule_search_locations[0]) / "breastclip"
    if "codebase.breastclip" not in sys.modules:
        stub = types.ModuleType("codebase.breastclip")
        stub.__path__ = [str(root)]
        sys.modules["codebase.breastclip"] = stub
    from codebase.breastclip.model.clip import BreastClip
    from codebase.breastclip.model.modules import efficientnet_custom

    return BreastClip, efficientnet_custom.EfficientNet


def _official_mammoclip(bert_folder: Path, monkeypatch):
    BreastClip, EfficientNet = _mammoclip_codebase()
    # from_pretrained downloads ImageNet weights; the same model with random ones instead
    monkeypatch.setattr(EfficientNet, "from_pretrained", classmethod(
        lambda cls, name, num_classes=1000, **kw: cls.from_name(name, num_classes=num_classes)))
    from transformers import AutoTokenizer

    model_config = {"name": "clip_custom", "temperature": 0.07,
                    "image_encoder": {"source": "cnn", "name": "tf_efficientnetv2-detect", "pretrained": True,
                                      "model_type": "cnn"},
                    "text_encoder": {"source": "huggingface", "name": str(bert_folder), "pretrained": True,
                                     "gradient_checkpointing": False, "pooling": "eos", "cache_dir": "unused",
                                     "trust_remote_code": False},
                    "projection_head": {"name": "linear", "dropout": 0.1, "proj_dim": 512}}
    tokenizer = AutoTokenizer.from_pretrained(bert_folder)
    torch.manual_seed(1)
    official = BreastClip(model_config, {"breast_clip": {}}, tokenizer)
    # batch-norm statistics of real activations (one batch, momentum 1), so that each layer's
    # differ and the image embedding depends on the image (with 0 and 1 it hardly does)
    norms = [m for m in official.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for norm in norms:
        norm.momentum = 1.0
    with torch.no_grad():
        official.train().encode_image(torch.randn(4, 3, 200, 136, generator=torch.Generator().manual_seed(2)))
    for norm in norms:
        norm.momentum = 0.01
    return official.eval(), tokenizer, model_config


def test_released_mammoclip_checkpoint_gives_the_official_models_embeddings(bert_folder, tmp_path, monkeypatch):
    official, tokenizer, model_config = _official_mammoclip(bert_folder, monkeypatch)
    path = tmp_path / "b2-model-best-epoch-10.tar"  # as the official trainer saves it
    torch.save({"model": official.state_dict(), "config": {"model": model_config, "loss": {"breast_clip": {}}},
                "epoch": 10}, path)
    ours, ledger = _imported(tmp_path, method="mammoclip", preset="paper_b2", external=True, checkpoint=str(path),
                             weights={"text": str(bert_folder)})
    # 200 x 136: at two of the stride-2 layers the input is even where it is odd at the
    # official model's built-for 260, so timm's padding alone would differ
    images = torch.randn(2, 3, 200, 136, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want_image = official.encode_image_normalized(images)
        tokens = tokenizer(TEXTS, padding="longest", truncation=True, max_length=256, return_tensors="pt")
        want_text = official.text_projection(official.encode_text(tokens))
        want_text = want_text / want_text.norm(dim=1, keepdim=True)
        got_image, got_text = ours.encode_image(images), ours.encode_text(TEXTS)
    assert (want_image[0] - want_image[1]).abs().max() > 0.05  # the embedding depends on the image
    assert torch.allclose(got_image, want_image, atol=1e-5)
    assert torch.allclose(got_text, want_text, atol=1e-5)
    assert torch.allclose(ours.logit_scale, official.logit_scale)
    assert ledger["trained_here"] is False and ledger["source"] == str(path)

    timm_padding = build_model("mammoclip", "paper_b2", padding_for=None, weights={"text": str(bert_folder)})
    timm_padding.load_state_dict(ours.state_dict())
    with torch.no_grad():
        assert (timm_padding.eval().encode_image(images) - want_image).abs().max() > 1e-3  # why padding_for exists


def test_a_mammoclip_checkpoint_of_another_backbone_or_head_is_one_line(bert_folder, tmp_path, monkeypatch):
    official, _, model_config = _official_mammoclip(bert_folder, monkeypatch)
    path = tmp_path / "b2.tar"
    torch.save({"model": official.state_dict(), "config": {"model": model_config}}, path)
    with pytest.raises(BenchmarkError, match="tf_efficientnet_b2 checkpoint; use the preset with that backbone"):
        _imported(tmp_path, method="mammoclip", preset="paper", external=True, checkpoint=str(path),
                  weights={"text": str(bert_folder)})
    mlp = dict(model_config, projection_head={"name": "mlp", "dropout": 0.1, "proj_dim": 512})
    torch.save({"model": official.state_dict(), "config": {"model": mlp}}, path)
    with pytest.raises(BenchmarkError, match="projection head 'mlp'"):
        _imported(tmp_path, method="mammoclip", preset="paper_b2", external=True, checkpoint=str(path),
                  weights={"text": str(bert_folder)})
    torch.save({"state_dict": {}}, path)
    with pytest.raises(BenchmarkError, match="not a Mammo-CLIP checkpoint"):
        _imported(tmp_path, method="mammoclip", preset="paper_b2", external=True, checkpoint=str(path),
                  weights={"text": str(bert_folder)})


# --- open_clip ------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["state_dict", "training_checkpoint"])
def test_open_clip_checkpoint_gives_open_clips_embeddings(tmp_path, layout):
    import open_clip

    torch.manual_seed(4)
    official = open_clip.create_model("ViT-B-16", pretrained=None, **SMOKE_OPEN_CLIP).eval()
    path = tmp_path / "open_clip_model.pt"
    state = official.state_dict()
    if layout == "training_checkpoint":  # open_clip's training loop: DDP's prefix, with the epoch
        state = {"epoch": 3, "name": "run", "state_dict": {f"module.{k}": v for k, v in state.items()}}
    torch.save(state, path)
    ours, _ = _imported(tmp_path, method="clip", preset="paper", external=True, checkpoint=str(path),
                        overrides={"image_size": 64, "open_clip_cfg": SMOKE_OPEN_CLIP})
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        want_image = official.encode_image(images, normalize=True)
        want_text = official.encode_text(open_clip.get_tokenizer("ViT-B-16")(TEXTS), normalize=True)
        assert torch.allclose(ours.encode_image(images), want_image, atol=1e-5)
        assert torch.allclose(ours.encode_text(TEXTS), want_text, atol=1e-5)


def _hf_clip_folder(folder: Path, hidden_act: str = "gelu") -> Path:
    """A Hugging Face CLIPModel of open_clip's SMOKE_OPEN_CLIP sizes, random weights, with
    OpenAI's BPE (open_clip's vocabulary and merges) as a CLIPTokenizer."""
    import open_clip
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    bpe = open_clip.get_tokenizer("ViT-B-16")
    names = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}  # OpenAI's, as HF has them
    (folder / "vocab.json").write_text(json.dumps({names.get(k, k): v for k, v in bpe.encoder.items()}))
    merges = sorted(bpe.bpe_ranks, key=bpe.bpe_ranks.get)
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(pair) for pair in merges) + "\n")
    CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt")).save_pretrained(folder)
    vision, text = SMOKE_OPEN_CLIP["vision_cfg"], SMOKE_OPEN_CLIP["text_cfg"]
    config = CLIPConfig(projection_dim=SMOKE_OPEN_CLIP["embed_dim"],
                        vision_config=dict(hidden_size=vision["width"], intermediate_size=4 * vision["width"],
                                           num_hidden_layers=vision["layers"], image_size=vision["image_size"],
                                           num_attention_heads=vision["width"] // vision["head_width"],
                                           patch_size=vision["patch_size"], hidden_act=hidden_act),
                        text_config=dict(hidden_size=text["width"], intermediate_size=4 * text["width"],
                                         num_hidden_layers=text["layers"], num_attention_heads=text["heads"],
                                         vocab_size=text["vocab_size"], max_position_embeddings=text["context_length"],
                                         hidden_act=hidden_act))
    torch.manual_seed(7)
    CLIPModel(config).save_pretrained(folder)
    return folder


def test_hugging_face_clip_folder_gives_the_hugging_face_models_embeddings(tmp_path):
    from transformers import CLIPModel, CLIPTokenizer

    folder = _hf_clip_folder(tmp_path / "clip-hf")
    ours, ledger = _imported(tmp_path, method="clip", preset="paper", external=True, checkpoint=str(folder),
                             overrides={"image_size": 64, "open_clip_cfg": SMOKE_OPEN_CLIP})
    official = CLIPModel.from_pretrained(folder).eval()
    tokens = CLIPTokenizer.from_pretrained(folder)(TEXTS, padding=True, return_tensors="pt")
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        want_image = torch.nn.functional.normalize(official.get_image_features(pixel_values=images).pooler_output, dim=-1)
        want_text = torch.nn.functional.normalize(official.get_text_features(**tokens).pooler_output, dim=-1)
        assert torch.allclose(ours.encode_image(images), want_image, atol=1e-5)
        assert torch.allclose(ours.encode_text(TEXTS), want_text, atol=1e-5)
    assert ledger["source"] == str(folder) and ledger["source_sha256"]


def test_a_hugging_face_clip_of_another_activation_or_tokenizer_is_one_line(tmp_path):
    folder = _hf_clip_folder(tmp_path / "quick", hidden_act="quick_gelu")
    entry = dict(method="clip", preset="paper", external=True, checkpoint=str(folder),
                 overrides={"image_size": 64, "open_clip_cfg": SMOKE_OPEN_CLIP})
    with pytest.raises(BenchmarkError, match="its activation is quick_gelu.*name its -quickgelu variant"):
        _imported(tmp_path, **entry)
    folder = _hf_clip_folder(tmp_path / "other-vocab")
    vocab = json.loads((folder / "vocab.json").read_text())
    first, second = "no</w>", "mass</w>"
    vocab[first], vocab[second] = vocab[second], vocab[first]
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "tokenizer.json").unlink(missing_ok=True)  # the fast tokenizer is rebuilt from vocab and merges
    with pytest.raises(BenchmarkError, match="its tokenizer is not open_clip's ViT-B-16 tokenizer"):
        _imported(tmp_path, **dict(entry, checkpoint=str(folder)))


def test_an_open_clip_checkpoint_of_another_architecture_is_one_line(tmp_path):
    import open_clip

    other = dict(SMOKE_OPEN_CLIP, embed_dim=16)
    path = tmp_path / "other.pt"
    torch.save(open_clip.create_model("ViT-B-16", pretrained=None, **other).state_dict(), path)
    with pytest.raises(BenchmarkError, match=f"{path}: does not fit open_clip's ViT-B-16"):
        _imported(tmp_path, method="clip", preset="paper", external=True, checkpoint=str(path),
                  overrides={"image_size": 64, "open_clip_cfg": SMOKE_OPEN_CLIP})
    config = _config(tmp_path, method="clip", preset="paper", external=True, checkpoint=str(path),
                     overrides={"image_size": 64, "open_clip_cfg": SMOKE_OPEN_CLIP})
    with pytest.raises(BenchmarkError, match=f"config: models.ext.checkpoint: {path}: does not fit"):
        check_external_formats(config)  # check-config reads it before any job


# --- this benchmark's own checkpoints, and the checks before any job --------------------------

def test_a_checkpoint_folder_of_another_run_is_imported_unchanged(tmp_path, tokenizer):
    torch.manual_seed(6)
    model = build_model("clip", "tiny", tokenizer=tokenizer)
    save_checkpoint(model, tmp_path / "other-results", "clip", "tiny", {"tokenizer": tokenizer})
    ours, ledger = _imported(tmp_path, method="clip", preset="tiny", external=True,
                             checkpoint=str(tmp_path / "other-results"))
    for key, value in model.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value)
    assert ledger["source_format"] == "benchmark checkpoint" and ledger["samples_seen"] is None
    with pytest.raises(BenchmarkError, match="holds clip/tiny, the entry says convirt/tiny"):
        check_external(_config(tmp_path, method="convirt", preset="tiny", external=True,
                               checkpoint=str(tmp_path / "other-results")))


@pytest.mark.parametrize("entry, message", [
    (dict(method="clip", preset="paper", external=True), "an external model needs a checkpoint"),
    (dict(method="clip", preset="paper", external=True, checkpoint="nowhere.pt"), "ext.checkpoint: nowhere.pt not found"),
    (dict(method="convirt", preset="paper", external=True, checkpoint="README.md"),
     "convirt reads no publisher's checkpoint format"),
    (dict(method="clip", preset="paper", external=True, checkpoint="docs"), "docs is a folder without model.json"),
    (dict(method="convirt", preset="paper", external=True, checkpoint="workflow/../tests/../models/.."),
     "is a folder without model.json"),
    (dict(method="clip", preset="paper", external=True, checkpoint="README.md", pretrain=False),
     "an external model is not trained here"),
])
def test_external_entries_are_checked_with_one_line(tmp_path, entry, message):
    with pytest.raises(BenchmarkError, match=message):
        check_external(_config(tmp_path, **entry))


def test_an_external_model_cannot_be_the_reference(tmp_path):
    config = _config(tmp_path, method="clip", preset="paper", external=True, checkpoint="README.md")
    config["stats"]["reference_model"] = "ext"
    with pytest.raises(BenchmarkError, match="reference_model: ext is an external model"):
        check_external(config)


def test_released_config_evaluates_without_embed_and_trains_nothing(tmp_path, bert_folder):
    """config/released.yaml, its paths pointed at a synthetic VinDr-Mammo: the plan imports
    the checkpoint, reads no EMBED and pretrains nothing."""
    import subprocess

    import yaml

    repo = Path(__file__).resolve().parents[1]
    config = yaml.safe_load((repo / "config/released.yaml").read_text())
    assert "embed" not in config["data"]
    config["results"] = str(tmp_path / "out")
    config["data"]["vindr"] = {"root": str(tmp_path / "vindr"), "synthetic": {"patients": 12, "seed": 2}}
    (tmp_path / "b5.tar").write_bytes(b"checked when the import job reads it")
    entry = config["models"]["mammoclip_b5_released"]
    entry.update(checkpoint=str(tmp_path / "b5.tar"), weights={"text": str(bert_folder)})
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    run = subprocess.run(["snakemake", "--cores", "1", "-n", "--configfile", str(tmp_path / "config.yaml")],
                         capture_output=True, text=True, cwd=repo)
    assert run.returncode == 0, run.stderr[-2000:]
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", run.stdout, flags=re.M))
    assert jobs["import_checkpoint"] == "1" and "pretrain" not in jobs and "tokenizer" not in jobs
    assert "features_vindr" in jobs and "features_embed" not in jobs and "figure_alignment" not in jobs
