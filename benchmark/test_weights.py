"""Small random weights in every real format the paper presets read, for rehearsing the
paper path on a CPU (``python -m benchmark make-test-weights OUT``; ``config/paper-smoke.yaml``
points at them). Key names, file formats and tokenizers are the real ones; only widths and
depths are shrunk, and ``config/paper-smoke.yaml`` shrinks each paper preset the same way
through its ``overrides``.

Written under OUT:
- ``dinov2_vitb14_reg4.safetensors``, ``resnet50.safetensors``, ``swin_tiny_patch4_window7_224.safetensors``,
  ``deit_base_patch16_224.safetensors``, ``tf_efficientnet_b5.safetensors`` (full size: timm's
  EfficientNets cannot be shrunk): timm state dicts (safetensors, timm key names);
- ``dinov2_vitb14_reg4_hf/``: the same DINOv2 as a Hugging Face ``Dinov2WithRegisters``
  folder (the form most people download);
- ``BioMedLM/``: a Hugging Face GPT-2 folder whose byte-level BPE tokenizer has no
  separator, pad or bos token (BioMedLM's situation);
- ``Bio_ClinicalBERT/``: a Hugging Face BERT folder with a WordPiece tokenizer;
- ``open_clip_ViT-B-16.bin``: an open_clip checkpoint of ViT-B-16 with shrunk towers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

# Shrunk sizes; config/paper-smoke.yaml's overrides name the same ones.
SMOKE_IMAGE = {
    "dinov2_vitb14_reg4": ("vit_base_patch14_reg4_dinov2", dict(img_size=56, embed_dim=32, depth=2, num_heads=2)),
    "resnet50": ("resnet50", dict(layers=(1, 1, 1, 1), channels=(16, 32, 64, 128), stem_width=16)),
    "swin_tiny_patch4_window7_224": ("swin_tiny_patch4_window7_224", dict(embed_dim=24, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1))),
    "deit_base_patch16_224": ("deit_base_patch16_224", dict(img_size=64, embed_dim=32, depth=2, num_heads=2)),
    # timm's EfficientNet entry points fix their widths and depths: the real B5 (28 M parameters)
    "tf_efficientnet_b5": ("tf_efficientnet_b5", {}),
}
SMOKE_OPEN_CLIP = dict(embed_dim=32,
                       vision_cfg=dict(image_size=64, layers=2, width=32, head_width=16, patch_size=16),
                       text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=2))


def _corpus() -> list[str]:
    """Report-like text for the tokenizers: captions of a few made-up records."""
    from benchmark.data.captions import embed_sentences, join_sentences

    rng = np.random.default_rng(0)
    texts = []
    for i in range(60):
        rec = {"study_description": ["MG Screening Bilateral", "MG Diagnostic Left"][i % 2],
               "reason": ["screening", "diagnostic"][i % 2], "age": str(40 + i), "race": "Asian",
               "ethnicity": "Unreported", "image_type": "2D", "laterality": "LR"[i % 2], "view": "CC",
               "density": 1 + i % 4, "birads": i % 7, "massshape": "XRO"[i % 3], "calcfind": "AF"[i % 2]}
        texts.append(join_sentences(embed_sentences(rec, rng, 0.5)).replace(" [SEP]", ""))
    return texts


def _image_weights(out: Path) -> None:
    import timm
    from safetensors.torch import save_file

    for stem, (name, kwargs) in SMOKE_IMAGE.items():
        model = timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / f"{stem}.safetensors"))


def _dinov2_hf_folder(folder: Path) -> None:
    from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel

    _, kwargs = SMOKE_IMAGE["dinov2_vitb14_reg4"]
    config = Dinov2WithRegistersConfig(hidden_size=kwargs["embed_dim"], num_hidden_layers=kwargs["depth"],
                                       num_attention_heads=kwargs["num_heads"], intermediate_size=4 * kwargs["embed_dim"],
                                       image_size=kwargs["img_size"], patch_size=14, num_register_tokens=4)
    Dinov2WithRegistersModel(config).save_pretrained(folder)


def _gpt2_folder(folder: Path, texts: list[str]) -> None:
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=600, special_tokens=["<|endoftext|>"], show_progress=False)
    bpe.save_model(str(folder))
    tokenizer = GPT2TokenizerFast(vocab_file=str(folder / "vocab.json"), merges_file=str(folder / "merges.txt"))
    tokenizer.save_pretrained(folder)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=48, n_layer=2, n_head=4, n_positions=256,
                        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
    GPT2LMHeadModel(config).save_pretrained(folder)  # BioMedLM ships a causal-LM checkpoint


def _bert_folder(folder: Path, texts: list[str]) -> None:
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    wordpiece = BertWordPieceTokenizer(lowercase=False)
    wordpiece.train_from_iterator(texts, vocab_size=600, show_progress=False)
    wordpiece.save_model(str(folder))
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=False).save_pretrained(folder)
    config = BertConfig(vocab_size=wordpiece.get_vocab_size(), hidden_size=48, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=96, max_position_embeddings=256)
    BertModel(config, add_pooling_layer=False).save_pretrained(folder)


def _open_clip_file(path: Path) -> None:
    import open_clip

    model = open_clip.create_model("ViT-B-16", pretrained=None, **SMOKE_OPEN_CLIP)
    torch.save(model.state_dict(), path)


def make_test_weights(out: Path) -> list[Path]:
    """Write every file above under ``out``; returns what was written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    texts = _corpus()
    _image_weights(out)
    _dinov2_hf_folder(out / "dinov2_vitb14_reg4_hf")
    _gpt2_folder(out / "BioMedLM", texts)
    _bert_folder(out / "Bio_ClinicalBERT", texts)
    _open_clip_file(out / "open_clip_ViT-B-16.bin")
    return sorted(out.iterdir())
