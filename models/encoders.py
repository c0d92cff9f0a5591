"""Image and text backbones shared by the methods.

Images: timm models (a small ViT or ResNet for ``tiny`` presets, the published backbones
for ``paper`` presets, built without downloading anything). Text: Hugging Face models
(BERT or GPT-2 style); ``tiny`` presets build them from a small config with the BPE
tokenizer trained on the training captions, ``paper`` presets load model and tokenizer
from a local folder (``weights`` in the config). A missing folder is one clear error.
"""

from __future__ import annotations

from pathlib import Path

import timm
import torch
import torch.nn as nn

from benchmark.data.tokenizer import load_tokenizer
from benchmark.errors import BenchmarkError

# timm families whose input size is free (convolutional): no ``img_size`` argument
SIZE_FREE = ("resnet", "efficientnet", "tf_efficientnet")


def image_backbone(name: str, image_size: int | tuple[int, int], **kwargs) -> nn.Module:
    """A timm backbone with its classifier removed (``num_classes=0``), random init; ``kwargs``
    go to timm (e.g. a smaller ``embed_dim`` and ``depth``, as config/paper-smoke.yaml shrinks them).
    ``image_size``: one side, or [height, width] (transformers take it as their ``img_size``)."""
    if name in ("vit_tiny", "vit_tiny_reg"):
        return timm.models.vision_transformer.VisionTransformer(
            img_size=image_size, patch_size=kwargs.get("patch_size", 16), embed_dim=kwargs.get("width", 192),
            depth=kwargs.get("depth", 4), num_heads=kwargs.get("heads", 3), num_classes=0,
            reg_tokens=4 if name == "vit_tiny_reg" else 0, no_embed_class=name == "vit_tiny_reg")
    if name == "resnet_tiny":  # ResNet-10 at half width: one basic block per stage
        return timm.models.resnet.ResNet(block=timm.models.resnet.BasicBlock, layers=(1, 1, 1, 1), num_classes=0,
                                         channels=(32, 64, 128, 256), stem_width=32)
    if name == "efficientnet_tiny":
        return efficientnet_tiny(**kwargs)
    extra = {"img_size": tuple(image_size) if isinstance(image_size, list) else image_size}
    if name.startswith(SIZE_FREE):
        extra = {}
    return timm.create_model(name, pretrained=False, num_classes=0, **extra, **kwargs)


def efficientnet_tiny(drop_rate: float = 0.0, drop_path_rate: float = 0.0) -> nn.Module:
    """EfficientNet-B0's seven stages (MBConv, squeeze-excitation, SiLU) at half width and one
    block per stage, through timm's EfficientNet builder: the tiny presets' EfficientNet."""
    from functools import partial

    from timm.models._efficientnet_builder import decode_arch_def, round_channels

    arch = [["ds_r1_k3_s1_e1_c16_se0.25"], ["ir_r1_k3_s2_e6_c24_se0.25"], ["ir_r1_k5_s2_e6_c40_se0.25"],
            ["ir_r1_k3_s2_e6_c80_se0.25"], ["ir_r1_k5_s1_e6_c112_se0.25"], ["ir_r1_k5_s2_e6_c192_se0.25"],
            ["ir_r1_k3_s1_e6_c320_se0.25"]]
    half = partial(round_channels, multiplier=0.5, divisor=8)
    return timm.models.efficientnet.EfficientNet(block_args=decode_arch_def(arch), num_features=half(1280),
                                                 stem_size=16, round_chs_fn=half, act_layer=nn.SiLU, num_classes=0,
                                                 drop_rate=drop_rate, drop_path_rate=drop_path_rate)


def pad_as_for_image_size(backbone: nn.Module, image_size: int) -> nn.Module:
    """Make every "same"-padded strided convolution of a TensorFlow-style timm backbone pad
    by a fixed amount: the amount "same" padding gives at an input of ``image_size`` square,
    whatever the input's size. The EfficientNet code Mammo-CLIP trains (EfficientNet-PyTorch's
    ``Conv2dStaticSamePadding``, built for its pretraining size, 456 for B5, 260 for B2)
    pads this way; timm pads for the actual input, which differs by one row or column at a
    stride-2 layer whose input size is even here and odd at the built-for size (at 1520 x 912
    it does). Parameters and state-dict keys stay as they were."""
    import math

    from timm.layers.conv2d_same import Conv2dSame

    sizes: dict[str, tuple[int, int]] = {}
    strided = {name: m for name, m in backbone.named_modules() if isinstance(m, Conv2dSame)}
    hooks = [m.register_forward_pre_hook(lambda m, args, name=name: sizes.__setitem__(name, args[0].shape[-2:]))
             for name, m in strided.items()]
    device = next(backbone.parameters()).device
    with torch.no_grad():
        backbone.eval()(torch.zeros(1, 3, image_size, image_size, device=device))
    for hook in hooks:
        hook.remove()
    for name, conv in strided.items():
        pads = []
        for size, k, s, d in zip(sizes[name], conv.kernel_size, conv.stride, conv.dilation):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            pads.append((total // 2, total - total // 2))
        conv.__class__ = StaticSameConv2d  # same parameters, fixed padding
        conv.static_pad = (pads[1][0], pads[1][1], pads[0][0], pads[0][1])  # left, right, top, bottom
    return backbone


class StaticSameConv2d(nn.Conv2d):
    """A convolution that zero-pads by ``static_pad`` (left, right, top, bottom) before convolving."""

    static_pad: tuple[int, int, int, int] = (0, 0, 0, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.conv2d(nn.functional.pad(x, self.static_pad), self.weight, self.bias, self.stride,
                                    0, self.dilation, self.groups)


HF_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                   "pytorch_model.bin.index.json")


def has_weight_files(folder: Path) -> bool:
    return any((Path(folder) / name).is_file() for name in HF_WEIGHT_FILES)


class TextEncoder(nn.Module):
    """A Hugging Face text model plus its tokenizer; returns hidden states and the mask."""

    def __init__(self, arch: str, context_length: int, tokenizer: str | None = None, weights: str | None = None,
                 config: dict | None = None, special_tokens: dict | None = None, what: str = "text encoder",
                 layers: int | None = None):
        """``special_tokens`` (Hugging Face tokenizers only): tokens to add, as
        ``tokenizer.add_special_tokens`` takes them, with the embeddings resized to match
        (MaMA adds a separator, which BioMedLM's GPT-2 tokenizer lacks); with a ``bos_token``
        among them every text is wrapped as bos + text + eos, as the official MaMA code does.
        ``layers``: keep only the first k transformer layers (GLAM's half of Bio_ClinicalBERT)."""
        super().__init__()
        from transformers import (
            AutoConfig,
            AutoModel,
            AutoTokenizer,
            BertConfig,
            BertModel,
            GPT2Config,
            GPT2Model,
        )

        self.context_length = context_length
        self.arch = arch
        self.wrap_bos_eos = False
        if weights:
            if not Path(weights).is_dir():
                raise BenchmarkError(f"{what}: {weights} not found; put the Hugging Face model folder there "
                                     "(config.json, weights and tokenizer files), e.g. from `huggingface-cli "
                                     "download` on a machine with internet")
            attention = (config or {}).get("attn_implementation")  # e.g. eager: MGCA reads attention maps
            options = {"attn_implementation": attention} if attention else {}
            sizes_only = torch.get_default_device().type == "meta"  # e.g. the disk check: read no weights
            if has_weight_files(Path(weights)) and not sizes_only:
                self.model = AutoModel.from_pretrained(weights, **options)
            else:  # a checkpoint's architecture folder (its state dict brings the weights), or sizes only
                self.model = AutoModel.from_config(AutoConfig.from_pretrained(weights), **options)
            self.hf_tokenizer = AutoTokenizer.from_pretrained(weights)
            if special_tokens:
                self.hf_tokenizer.add_special_tokens(dict(special_tokens))
                self.model.resize_token_embeddings(len(self.hf_tokenizer), mean_resizing=not sizes_only)
                self.wrap_bos_eos = "bos_token" in special_tokens
            if self.hf_tokenizer.pad_token is None:
                self.hf_tokenizer.pad_token = self.hf_tokenizer.eos_token
            self.bpe = None
        else:
            self.bpe = load_tokenizer(tokenizer, context_length) if tokenizer else None
            vocab = self.bpe.get_vocab_size() if self.bpe else (config or {}).get("vocab_size", 30522)
            cfg = dict(config or {}, vocab_size=vocab)
            if self.bpe is not None:  # the special tokens of benchmark.data.tokenizer
                cfg.update(pad_token_id=0, bos_token_id=3, eos_token_id=2)
            elif arch == "gpt2":  # architecture only (no tokenizer yet): keep GPT-2's ids inside the vocabulary
                cfg.setdefault("bos_token_id", vocab - 1)
                cfg.setdefault("eos_token_id", vocab - 1)
            if arch == "bert":
                self.model = BertModel(BertConfig(**cfg), add_pooling_layer=False)
            else:
                self.model = GPT2Model(GPT2Config(**cfg))
            self.hf_tokenizer = None
        if layers is not None:
            keep_first_layers(self.model, int(layers), what)
        self.width = self.model.config.hidden_size

    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.bpe is not None:
            encodings = self.bpe.encode_batch(texts)
            ids = torch.tensor([e.ids for e in encodings], dtype=torch.long)
            mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.long)
            return ids, mask
        if self.hf_tokenizer is None:
            raise BenchmarkError(f"{self.arch} text encoder has no tokenizer: give `weights` (a local model "
                                 "folder) or a trained tokenizer")
        if self.wrap_bos_eos:
            texts = [f"{self.hf_tokenizer.bos_token}{t}{self.hf_tokenizer.eos_token}" for t in texts]
        out = self.hf_tokenizer(texts, padding="max_length", truncation=True, max_length=self.context_length,
                                return_tensors="pt")
        return out["input_ids"], out["attention_mask"]

    def save_architecture(self, folder: Path) -> None:
        """The Hugging Face config and tokenizer (special tokens included), without weights:
        with a checkpoint's state dict, all a checkpoint needs to rebuild this encoder."""
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        base.config.save_pretrained(folder)
        self.hf_tokenizer.save_pretrained(folder)

    def token_id(self, token: str) -> int | None:
        """The id of a special token, or None if the tokenizer lacks it (or there is none)."""
        if self.bpe is not None:
            return self.bpe.token_to_id(token)
        if self.hf_tokenizer is None:
            return None
        token_id = self.hf_tokenizer.convert_tokens_to_ids(token)
        return None if token_id == self.hf_tokenizer.unk_token_id else token_id

    def forward(self, texts: list[str], output_attentions: bool = False):
        ids, mask = self.tokenize(texts)
        device = next(self.model.parameters()).device
        out = self.model(input_ids=ids.to(device), attention_mask=mask.to(device), output_hidden_states=True,
                         output_attentions=output_attentions)
        return out, ids.to(device), mask.to(device)


def keep_first_layers(model: nn.Module, k: int, what: str) -> None:
    """Drop every transformer layer of a Hugging Face BERT or GPT-2 after the first ``k``;
    the config says so, so a checkpoint's saved architecture rebuilds the shorter model."""
    stack_owner, attr, count = (model.encoder, "layer", "num_hidden_layers") if hasattr(model, "encoder") \
        else (model, "h", "n_layer")
    layers = getattr(stack_owner, attr)
    if k > len(layers):
        raise BenchmarkError(f"{what}: layers {k} but the encoder has only {len(layers)}")
    setattr(stack_owner, attr, nn.ModuleList(list(layers)[:k]))
    setattr(model.config, count, k)


def masked_mean(hidden_ntd: torch.Tensor, mask_nt: torch.Tensor) -> torch.Tensor:
    weights = mask_nt.unsqueeze(-1).to(hidden_ntd.dtype)
    return (hidden_ntd * weights).sum(1) / weights.sum(1).clamp(min=1e-6)


def mlp(in_dim: int, hidden: int, out_dim: int, batch_norm: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(in_dim, hidden)]
    if batch_norm:
        layers.append(nn.BatchNorm1d(hidden))
    layers += [nn.ReLU(inplace=True), nn.Linear(hidden, out_dim)]
    return nn.Sequential(*layers)


class BatchNormMLP(nn.Module):
    """Linear -> BatchNorm -> ReLU -> Linear -> BatchNorm, the official MaMA and MGCA heads
    (``GlobalEmbedding``, ``LocalEmbedding``, ``SimCLRProjectionHead``). Takes (N, C) or
    (N, L, C): a 1x1 convolution over tokens is a linear layer per token, and its batch
    norm pools the batch and the tokens, as it does here on the flattened (N * L, C)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, bias: bool = True, out_affine: bool = False):
        super().__init__()
        self.fc1, self.bn1 = nn.Linear(in_dim, hidden, bias=bias), nn.BatchNorm1d(hidden)
        self.fc2, self.bn2 = nn.Linear(hidden, out_dim, bias=bias), nn.BatchNorm1d(out_dim, affine=out_affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        out = self.bn2(self.fc2(torch.relu(self.bn1(self.fc1(flat)))))
        return out.reshape(*x.shape[:-1], out.shape[-1])


def freeze(module: nn.Module) -> None:
    for p in module.parameters():
        p.requires_grad_(False)
