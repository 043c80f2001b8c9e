"""``plainconv3d`` weights as an nnU-Net v2 ``-pretrained_weights`` checkpoint for a ``PlainConvUNet`` [0].

nnU-Net v2's ``load_pretrained_weights`` (``nnunetv2/run/load_pretrained_weights.py``) reads
``torch.load(FILE)["network_weights"]`` and requires every key of the network's state dict, except those
containing ``.seg_layers.``, to be present with the same shape: an encoder alone is refused ("Key
decoder.stages.0... is missing"). So the checkpoint holds the whole ``PlainConvUNet`` but the 1x1 segmentation
heads (whose width is the number of classes, unknown here):

- the encoder, from organfm's ``PlainConvEncoder``: organfm stage ``i`` is ``nn.Sequential(conv, norm, act,
  conv, norm, act)``, nnU-Net's is ``StackedConvBlocks`` of two ``ConvDropoutNormReLU``; each tensor is written
  under all the names nnU-Net's state dict has for it (``conv`` / ``norm`` and their ``all_modules.0`` /
  ``all_modules.1`` aliases, and the decoder's ``decoder.encoder.*`` reference to the same encoder);
- the decoder (transposed convs + conv blocks), which Triad does not pretrain (its light SimMIM decoder has
  another shape): freshly initialised as nnU-Net initialises it (``InitWeights_He(1e-2)``: Kaiming-normal
  convolutions with zero biases; instance norms at weight 1, bias 0), from a fixed seed.

The plans must describe the same network: ``nnunet_architecture.json`` (written beside the checkpoint) is the
``architecture`` block to put into ``nnUNetPlans.json`` (3³ kernels, 2 convs per encoder stage, 2 per decoder
stage, conv bias, InstanceNorm3d(eps 1e-5, affine), LeakyReLU(0.01), no dropout: nnU-Net's defaults, and
organfm's ``plainconv3d`` layer for layer). The SimMIM ``mask_value`` has no place in nnU-Net and is dropped.

[0] Isensee et al., "nnU-Net: a self-configuring method for deep learning-based biomedical image
    segmentation", Nature Methods 2021; code: github.com/MIC-DKFZ/nnUNet, architectures:
    github.com/MIC-DKFZ/dynamic-network-architectures.
"""
from __future__ import annotations

import io
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from organfm.outputs.atomic import write_atomic

__all__ = ["NNUNET_ARCHITECTURE", "NNUNET_WEIGHTS", "PLAIN_CONV_UNET", "build_nnunet_architecture",
           "build_nnunet_weights", "check_nnunet_exportable", "save_nnunet_export"]

NNUNET_WEIGHTS = "nnunet_pretrained.pth"
NNUNET_ARCHITECTURE = "nnunet_architecture.json"
PLAIN_CONV_UNET = "dynamic_network_architectures.architectures.unet.PlainConvUNet"

_KERNEL = 3  # plainconv3d's convolutions are 3³, as nnU-Net's for isotropic data
_NEG_SLOPE = 1e-2  # LeakyReLU slope of both, and the ``a`` of nnU-Net's He initialisation
# organfm's Sequential index -> (nnU-Net conv block in the stage, module in the block, its all_modules index)
_LAYERS = {0: (0, "conv", 0), 1: (0, "norm", 1), 3: (1, "conv", 0), 4: (1, "norm", 1)}
_KEY = re.compile(r"stages\.(\d+)\.(\d+)\.(weight|bias)$")
_DROPPED = ("mask_value",)  # SimMIM's learnable masked-voxel value: pretraining only


def check_nnunet_exportable(architecture: str, backbone_args: Mapping[str, Any],
                            weights: Mapping[str, torch.Tensor]) -> None:
    """Refuse, naming the mismatch, weights that are not exactly a ``PlainConvUNet`` encoder.

    Args:
        architecture: the export's backbone name (must be ``plainconv3d``).
        backbone_args: its ``in_chans``, ``channels``, ``strides``.
        weights: the exported state dict (organfm's ``PlainConvEncoder`` names).

    Raises:
        ValueError: another architecture, or a tensor that has no place in (or is missing from) the encoder.
    """
    if architecture != "plainconv3d":
        raise ValueError(f"--format nnunet writes nnU-Net's PlainConvUNet encoder, which only the plainconv3d "
                         f"backbone matches; this export is {architecture!r} (Triad with backbone.name=plainconv3d "
                         "trains one; for swin3d use --format monai)")
    channels, strides = _stage_layout(backbone_args)
    in_chans = int(backbone_args.get("in_chans", 1))
    expected = {}
    for i, (c_in, c_out) in enumerate(zip((in_chans, *channels[:-1]), channels)):
        expected[f"stages.{i}.0.weight"] = (c_out, c_in, _KERNEL, _KERNEL, _KERNEL)
        expected[f"stages.{i}.3.weight"] = (c_out, c_out, _KERNEL, _KERNEL, _KERNEL)
        for j in (0, 1, 3, 4):
            expected[f"stages.{i}.{j}.bias"] = (c_out,)
        for j in (1, 4):  # affine instance norms: nnU-Net's norm_op_kwargs affine=True
            expected[f"stages.{i}.{j}.weight"] = (c_out,)
    unknown = sorted(k for k in weights if k not in expected and k not in _DROPPED)
    if unknown:
        raise ValueError(f"--format nnunet: tensors {unknown[:5]} have no place in a PlainConvUNet encoder of "
                         f"channels {channels}, strides {strides} (nnU-Net's stage is conv-norm-LeakyReLU x 2)")
    missing = sorted(k for k in expected if k not in weights)
    if missing:
        raise ValueError(f"--format nnunet: the export lacks {missing[:5]}, which a PlainConvUNet encoder of "
                         f"channels {channels} has (a conv without bias or a norm without affine does not match "
                         "nnU-Net's conv_bias=True, affine=True)")
    reshaped = [f"{k}: {tuple(weights[k].shape)} vs {v}" for k, v in expected.items() if tuple(weights[k].shape) != v]
    if reshaped:
        raise ValueError(f"--format nnunet: tensors of another shape than a PlainConvUNet encoder's (3³ kernels): "
                         f"{reshaped[:5]}")


def build_nnunet_architecture(backbone_args: Mapping[str, Any], *, n_conv_per_stage_decoder: int = 2) -> dict[str, Any]:
    """The ``architecture`` block of ``nnUNetPlans.json`` whose encoder is this ``plainconv3d``.

    Args:
        backbone_args: ``channels`` and ``strides`` of the exported encoder.
        n_conv_per_stage_decoder: convs per decoder stage (nnU-Net's default planner: 2).

    Returns:
        ``{"network_class_name", "arch_kwargs", "_kw_requires_import"}``, as nnU-Net's planners write it.
    """
    channels, strides = _stage_layout(backbone_args)
    n = len(channels)
    return {
        "network_class_name": PLAIN_CONV_UNET,
        "arch_kwargs": {
            "n_stages": n, "features_per_stage": channels, "conv_op": "torch.nn.modules.conv.Conv3d",
            "kernel_sizes": [[_KERNEL] * 3 for _ in range(n)], "strides": [[s] * 3 for s in strides],
            "n_conv_per_stage": [2] * n, "n_conv_per_stage_decoder": [n_conv_per_stage_decoder] * (n - 1),
            "conv_bias": True, "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
            "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"negative_slope": _NEG_SLOPE, "inplace": True},
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }


def build_nnunet_weights(weights: Mapping[str, torch.Tensor], backbone_args: Mapping[str, Any], *,
                         n_conv_per_stage_decoder: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    """The ``network_weights`` of a ``PlainConvUNet`` with this encoder (all keys but ``.seg_layers.``).

    Args:
        weights: the exported ``PlainConvEncoder`` state dict (checked by :func:`check_nnunet_exportable`).
        backbone_args: ``in_chans``, ``channels``, ``strides``.
        n_conv_per_stage_decoder: convs per decoder stage, as in the plans.
        seed: seed of the decoder's fresh initialisation.

    Returns:
        nnU-Net state-dict name -> tensor; aliases of one tensor share it.
    """
    channels, strides = _stage_layout(backbone_args)
    out: dict[str, torch.Tensor] = {}
    for key, tensor in weights.items():
        if key in _DROPPED:
            continue
        stage, layer, param = _KEY.fullmatch(key).groups()
        block, module, alias = _LAYERS[int(layer)]
        tensor = tensor.detach().clone().contiguous()
        for prefix in ("encoder", "decoder.encoder"):  # UNetDecoder keeps a reference to the encoder
            base = f"{prefix}.stages.{stage}.0.convs.{block}"
            out[f"{base}.{module}.{param}"] = tensor
            out[f"{base}.all_modules.{alias}.{param}"] = tensor
    generator = torch.Generator().manual_seed(seed)
    # nnU-Net's decoder, bottleneck up: stage s-1 upsamples channels[-s] to channels[-(s+1)] by strides[-s]
    # (a transposed conv, kernel = stride), concatenates the skip and runs n_conv_per_stage_decoder 3³ convs
    for s in range(1, len(channels)):
        below, skip, stride = channels[-s], channels[-(s + 1)], strides[-s]
        up = _he((below, skip, stride, stride, stride), generator)
        out[f"decoder.transpconvs.{s - 1}.weight"], out[f"decoder.transpconvs.{s - 1}.bias"] = up, torch.zeros(skip)
        for c in range(n_conv_per_stage_decoder):
            base = f"decoder.stages.{s - 1}.convs.{c}"
            conv = _he((skip, 2 * skip if c == 0 else skip, _KERNEL, _KERNEL, _KERNEL), generator)
            bias, norm_w, norm_b = torch.zeros(skip), torch.ones(skip), torch.zeros(skip)
            for module, alias, w, b in (("conv", 0, conv, bias), ("norm", 1, norm_w, norm_b)):
                out[f"{base}.{module}.weight"] = out[f"{base}.all_modules.{alias}.weight"] = w
                out[f"{base}.{module}.bias"] = out[f"{base}.all_modules.{alias}.bias"] = b
    return out


def save_nnunet_export(folder: str | Path, weights: Mapping[str, torch.Tensor], contract: Mapping[str, Any]) -> list[Path]:
    """Write ``nnunet_pretrained.pth`` + ``nnunet_architecture.json`` into ``folder`` (atomically, umask modes).

    Args:
        folder: the export folder.
        weights: the exported ``plainconv3d`` state dict.
        contract: the export's data contract (``architecture``, ``backbone_args``).

    Returns:
        The two paths written.

    Raises:
        ValueError: the weights are not a ``PlainConvUNet`` encoder (see :func:`check_nnunet_exportable`).
    """
    args = contract.get("backbone_args") or {}
    check_nnunet_exportable(str(contract.get("architecture")), args, weights)
    architecture = build_nnunet_architecture(args)
    # plain tensors and JSON-like values only: nnU-Net's torch.load (weights_only by default) accepts them
    checkpoint = {"network_weights": build_nnunet_weights(weights, args),
                  "organfm": {"architecture": architecture, "in_chans": int(args.get("in_chans", 1)),
                              "pretrained": "encoder", "step": contract.get("step"),
                              "method": contract.get("method")}}
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    folder = Path(folder)
    weights_path, architecture_path = folder / NNUNET_WEIGHTS, folder / NNUNET_ARCHITECTURE
    write_atomic(weights_path, buffer.getvalue())
    write_atomic(architecture_path, json.dumps(architecture, indent=2) + "\n")
    return [weights_path, architecture_path]


def _stage_layout(backbone_args: Mapping[str, Any]) -> tuple[list[int], list[int]]:
    channels = [int(c) for c in backbone_args.get("channels") or ()]
    strides = [int(s) for s in backbone_args.get("strides") or ()]
    if not channels or len(channels) != len(strides):
        raise ValueError(f"--format nnunet needs the export's channels and strides per stage (backbone_args), "
                         f"got {dict(backbone_args)}")
    return channels, strides


def _he(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """nnU-Net's ``InitWeights_He(1e-2)`` for one conv / transposed-conv weight (fan-in as torch counts it)."""
    return nn.init.kaiming_normal_(torch.empty(shape), a=_NEG_SLOPE, generator=generator)
