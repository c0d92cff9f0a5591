"""CPU kernel and layout choices (benchmark/precision.py) change kernels, not models."""

import copy

import numpy as np
import pytest
import torch

from benchmark.checkpoint import load_checkpoint, save_checkpoint
from benchmark.precision import (
    channels_last_convolutions,
    fp32_depthwise_convolutions,
    precision_context,
    prefer_fast_cpu_kernels,
    resolve_precision,
)
from benchmark.registry import build_model
from models.encoders import image_backbone


def test_depthwise_convolutions_run_in_fp32_under_cpu_bf16_and_keep_their_weights():
    torch.manual_seed(0)
    model = image_backbone("efficientnet_tiny", [40, 24]).eval()
    reference = copy.deepcopy(model)
    keys = list(model.state_dict())
    cpu = torch.device("cpu")
    changed = fp32_depthwise_convolutions(model, cpu, "bf16")
    depthwise = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert changed == len(depthwise) > 0 and list(model.state_dict()) == keys
    assert all(type(m).__name__.startswith("Fp32") for m in depthwise)
    assert fp32_depthwise_convolutions(model, cpu, "bf16") == 0  # once only
    assert fp32_depthwise_convolutions(copy.deepcopy(reference), cpu, "fp32") == 0  # fp32 changes nothing
    conv = depthwise[0]
    x = torch.randn(2, conv.in_channels, 10, 6)
    with precision_context(cpu, "bf16"):
        out = conv(x)
    assert out.dtype == torch.float32 and torch.equal(out, torch.nn.functional.conv2d(
        x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups))
    twin = copy.deepcopy(model)  # a fine-tune copies the pretrained model
    images = torch.randn(2, 3, 40, 24)
    assert torch.allclose(twin(images), model(images)) and torch.allclose(model(images), reference(images), atol=1e-5)



@pytest.mark.parametrize("backbone", ["resnet_tiny", "efficientnet_tiny"])
def test_channels_last_convolutions_change_the_layout_not_the_model(backbone):
    """On a CPU the convolutions (and the max pool and batch norms after them) run
    channels-last; the outputs, the gradients and the state dict stay those of NCHW."""
    torch.manual_seed(0)
    model = image_backbone(backbone, [40, 24]).train()
    reference = copy.deepcopy(model)
    cpu = torch.device("cpu")
    assert channels_last_convolutions(model, cpu)
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    assert list(model.state_dict()) == list(reference.state_dict())
    images = torch.randn(3, 3, 40, 24)
    torch.manual_seed(1)  # the same dropout draws
    out = model(images)
    torch.manual_seed(1)
    expected = reference(images)
    assert torch.allclose(out, expected, atol=1e-4)  # float rounding, amplified by batch norm over 3 images
    out.square().sum().backward()
    expected.square().sum().backward()
    grads, expected_grads = (torch.cat([p.grad.flatten() for p in m.parameters()]) for m in (model, reference))
    assert (grads - expected_grads).norm() <= 1e-4 * expected_grads.norm()
    layer = torch.nn.Linear(4, 2)
    assert not channels_last_convolutions(layer, cpu) and not channels_last_convolutions(reference, torch.device("meta"))


def test_a_channels_last_model_saves_the_checkpoint_an_nchw_model_loads(tmp_path):
    torch.manual_seed(0)
    model = build_model("convirt", "tiny")
    prefer_fast_cpu_kernels(model, torch.device("cpu"), "bf16")
    save_checkpoint(model, tmp_path, "convirt", "tiny", {})
    loaded = load_checkpoint(tmp_path)
    assert next(m for m in loaded.modules() if isinstance(m, torch.nn.Conv2d)).weight.is_contiguous()
    for (name, p), q in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(p, q), name

def _attention_kernels(attention: torch.nn.MultiheadAttention, context) -> set[str]:
    """The scaled-dot-product kernels a training step (forward and backward) runs."""
    x = torch.randn(4, 9, attention.embed_dim, requires_grad=True)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        with context:
            out, _ = attention(x, x, x, need_weights=False)
        out.float().sum().backward()
    return {e.key for e in prof.key_averages() if "attention" in e.key and e.key.startswith("aten::_scaled")}


def test_cpu_bf16_training_runs_attention_through_the_math_kernel():
    """open_clip's nn.MultiheadAttention (and timm's, Hugging Face's blocks) call
    scaled_dot_product_attention: under CPU bf16 training its fused kernel is replaced by
    the math one, forward and backward; fp32 keeps PyTorch's choice."""
    torch.manual_seed(0)
    attention = torch.nn.MultiheadAttention(32, 4, batch_first=True).train()
    cpu = torch.device("cpu")
    fused = _attention_kernels(attention, precision_context(cpu, "bf16", math_attention=False))
    math = _attention_kernels(attention, precision_context(cpu, "bf16"))
    assert any("flash" in k for k in fused) and not any("flash" in k for k in math)
    context = precision_context(cpu, "bf16")  # reusable across steps, as torch.autocast
    for _ in range(2):
        with context:
            assert torch.is_autocast_enabled("cpu")
        assert not torch.is_autocast_enabled("cpu")


def test_finetune_predictions_in_bf16_keep_fp32_resolution(tokenizer):
    """The fine-tuned encoder predicts under bf16 autocast; the head and softmax in fp32, so
    the scores stay distinct per image and within bf16 rounding of the fp32 scores."""
    from benchmark.evaluate.finetune import Classifier, predict
    from benchmark.registry import build_model

    torch.manual_seed(0)
    classifier = Classifier(build_model("clip", "tiny", tokenizer=tokenizer), 4)
    images = torch.randint(0, 256, (40, 1, 96, 96), dtype=torch.uint8)
    fp32, bf16 = predict(classifier, images, precision="fp32"), predict(classifier, images, precision="bf16")
    assert len(np.unique(bf16[:, 0])) == len(images)
    assert np.abs(bf16 - fp32).max() < 0.02 and not np.array_equal(bf16, fp32)


@pytest.mark.parametrize("method", ["mama", "clip"])
def test_finetune_with_activation_checkpointing_recomputes_under_the_same_kernels(method, tokenizer):
    """A checkpointed block recomputes its forward during the backward; under CPU bf16 it
    must pick the math attention kernel again (the paper presets fine-tune checkpointed)."""
    from benchmark.evaluate.finetune import finetune
    from benchmark.registry import build_model

    torch.manual_seed(0)
    model = build_model(method, "tiny", tokenizer=tokenizer)
    model.set_grad_checkpointing(True)
    images = torch.randint(0, 256, (8, 1, 96, 96), dtype=torch.uint8)
    y = np.arange(8) % 2
    result = finetune(model, images, y, images, y, 2, steps=2, batch_size=4, lr=1e-4, weight_decay=0.0,
                      eval_every=2, patience=1, seed=0, precision="bf16")
    assert np.isfinite(result.history[-1]["loss"]) and result.precision == "bf16"


@pytest.mark.parametrize("avx512_bf16, amx, expected", [(False, False, "fp32"), (True, False, "bf16"),
                                                        (False, True, "bf16")])
def test_auto_precision_is_bf16_only_on_a_cpu_with_bf16_in_hardware(monkeypatch, avx512_bf16, amx, expected):
    """Emulated bf16 (a CPU with AVX-512 but without its BF16 extension) trains about 2x slower
    than fp32, so ``auto`` (the default) takes fp32 there, and explicit settings stay as given."""
    # private PyTorch checks (native_bf16 reads them where they exist); set even if a release drops them
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == expected
    assert resolve_precision("bf16", cpu) == "bf16" and resolve_precision("fp32", cpu) == "fp32"
    with precision_context(cpu, "auto"):
        product = torch.randn(4, 4) @ torch.randn(4, 4)
    assert product.dtype == (torch.bfloat16 if expected == "bf16" else torch.float32)
    with pytest.raises(ValueError, match="fp16"):
        resolve_precision("fp16", cpu)
