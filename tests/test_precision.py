"""CPU kernel choices under bf16 autocast (benchmark/precision.py) change kernels, not models."""

import copy

import torch

from benchmark.precision import prefer_fast_cpu_kernels, training_autocast
from models.encoders import image_backbone


def test_depthwise_convolutions_run_in_fp32_under_cpu_bf16_and_keep_their_weights():
    torch.manual_seed(0)
    model = image_backbone("efficientnet_tiny", [40, 24]).eval()
    reference = copy.deepcopy(model)
    keys = list(model.state_dict())
    cpu = torch.device("cpu")
    changed = prefer_fast_cpu_kernels(model, cpu, "bf16")
    depthwise = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert changed == len(depthwise) > 0 and list(model.state_dict()) == keys
    assert all(type(m).__name__.startswith("Fp32") for m in depthwise)
    assert prefer_fast_cpu_kernels(model, cpu, "bf16") == 0  # once only
    assert prefer_fast_cpu_kernels(copy.deepcopy(reference), cpu, "fp32") == 0  # fp32 changes nothing
    conv = depthwise[0]
    x = torch.randn(2, conv.in_channels, 10, 6)
    with training_autocast(cpu, "bf16"):
        out = conv(x)
    assert out.dtype == torch.float32 and torch.equal(out, torch.nn.functional.conv2d(
        x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups))
    twin = copy.deepcopy(model)  # a fine-tune copies the pretrained model
    images = torch.randn(2, 3, 40, 24)
    assert torch.allclose(twin(images), model(images)) and torch.allclose(model(images), reference(images), atol=1e-5)
