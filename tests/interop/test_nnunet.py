"""``--format nnunet``: the checkpoint nnU-Net v2 loads into a real ``PlainConvUNet``, with the same encoder output."""
from __future__ import annotations

import json
import pydoc

import pytest
import torch

from organfm.backbones import create_backbone
from organfm.interop.nnunet import (NNUNET_ARCHITECTURE, NNUNET_WEIGHTS, build_nnunet_architecture,
                                    build_nnunet_weights, check_nnunet_exportable, save_nnunet_export)

unet = pytest.importorskip("dynamic_network_architectures.architectures.unet")
from dynamic_network_architectures.initialization.weight_init import InitWeights_He  # noqa: E402

try:  # the real loader where nnunetv2 is installed; else the mirror below
    from nnunetv2.run.load_pretrained_weights import load_pretrained_weights
except ImportError:
    def load_pretrained_weights(network, fname, verbose=False):
        """Mirrors nnunetv2/run/load_pretrained_weights.py (nnU-Net v2.x, MIC-DKFZ/nnUNet) check for check.

        It reads ``torch.load(fname)["network_weights"]`` (torch's default ``weights_only=True``), skips keys
        containing ``.seg_layers.``, asserts that EVERY other key of the network is in the file with the
        network's shape (so an encoder-only file is refused), then loads the file's matching keys over the
        network's state dict with a strict ``load_state_dict``. (DDP / torch.compile unwrapping omitted: the
        network here is plain.)
        """
        pretrained_dict = torch.load(fname)["network_weights"]
        skip_strings_in_pretrained = [".seg_layers."]
        model_dict = network.state_dict()
        for key, _ in model_dict.items():
            if all(i not in key for i in skip_strings_in_pretrained):
                assert key in pretrained_dict, f"Key {key} is missing in the pretrained model weights."
                assert model_dict[key].shape == pretrained_dict[key].shape, f"The shape of {key} is not the same."
        pretrained_dict = {k: v for k, v in pretrained_dict.items()
                           if k in model_dict.keys() and all(i not in k for i in skip_strings_in_pretrained)}
        model_dict.update(pretrained_dict)
        network.load_state_dict(model_dict)

ARGS = {"in_chans": 1, "channels": [4, 8, 16], "strides": [1, 2, 2]}


def _backbone():
    torch.manual_seed(0)
    b = create_backbone("plainconv3d", **ARGS).eval()
    with torch.no_grad():  # norms away from their (1, 0) init, so a norm mapped to the wrong place shows
        for p in b.model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return b


def _network_from_plans(architecture: dict, num_classes: int = 3):
    """What nnU-Net's get_network_from_plans does with the plans' architecture block (then the He init)."""
    kwargs = dict(architecture["arch_kwargs"])
    for key in architecture["_kw_requires_import"]:
        if kwargs[key] is not None:
            kwargs[key] = pydoc.locate(kwargs[key])
    network = pydoc.locate(architecture["network_class_name"])(input_channels=1, num_classes=num_classes,
                                                               deep_supervision=True, **kwargs)
    network.apply(InitWeights_He(1e-2))
    return network


def test_nnunet_loads_the_checkpoint_and_its_encoder_computes_organfms_features(tmp_path):
    b = _backbone()
    weights = b.model.state_dict()
    paths = save_nnunet_export(tmp_path, weights, {"architecture": "plainconv3d", "backbone_args": ARGS})
    assert [p.name for p in paths] == [NNUNET_WEIGHTS, NNUNET_ARCHITECTURE]
    architecture = json.loads((tmp_path / NNUNET_ARCHITECTURE).read_text())
    network = _network_from_plans(architecture).eval()
    assert type(network) is unet.PlainConvUNet
    load_pretrained_weights(network, str(tmp_path / NNUNET_WEIGHTS))
    state = network.state_dict()
    for key, tensor in weights.items():  # every encoder tensor landed, under each of nnU-Net's names for it
        if key == "mask_value":
            continue
        i, j, param = key.split(".")[1:]
        block, module, alias = {"0": (0, "conv", 0), "1": (0, "norm", 1), "3": (1, "conv", 0), "4": (1, "norm", 1)}[j]
        for prefix in ("encoder", "decoder.encoder"):
            base = f"{prefix}.stages.{i}.0.convs.{block}"
            assert torch.equal(state[f"{base}.{module}.{param}"], tensor), key
            assert torch.equal(state[f"{base}.all_modules.{alias}.{param}"], tensor), key
    x = torch.rand(2, 1, 16, 16, 16)
    with torch.no_grad():
        theirs = network.encoder(x)  # PlainConvUNet's encoder returns every stage (return_skips=True)
        ours = b.forward_skips(x)
        assert network(x)[0].shape == (2, 3, 16, 16, 16)  # the whole U-Net runs on the loaded weights
    assert len(theirs) == len(ours) == 3
    for t, o in zip(theirs, ours):
        assert torch.equal(t, o)  # the same layers in the same order: bit for bit


def test_nnunet_refuses_an_encoder_without_the_decoder(tmp_path):
    weights = build_nnunet_weights(_backbone().model.state_dict(), ARGS)
    torch.save({"network_weights": {k: v for k, v in weights.items() if k.startswith("encoder.")}}, tmp_path / "e.pth")
    network = _network_from_plans(build_nnunet_architecture(ARGS))
    with pytest.raises(AssertionError, match="decoder"):  # why the export writes a freshly initialised decoder
        load_pretrained_weights(network, str(tmp_path / "e.pth"))


def test_mismatches_are_refused_by_name():
    weights = _backbone().model.state_dict()
    with pytest.raises(ValueError, match="only the plainconv3d"):
        check_nnunet_exportable("swin3d", ARGS, weights)
    with pytest.raises(ValueError, match=r"stages\.0\.7\.weight"):
        check_nnunet_exportable("plainconv3d", ARGS, {**weights, "stages.0.7.weight": torch.zeros(4)})
    no_affine = {k: v for k, v in weights.items() if k != "stages.1.1.weight"}
    with pytest.raises(ValueError, match=r"lacks \['stages\.1\.1\.weight'\].*affine"):
        check_nnunet_exportable("plainconv3d", ARGS, no_affine)
    with pytest.raises(ValueError, match="another shape"):
        check_nnunet_exportable("plainconv3d", ARGS, {**weights, "stages.2.0.weight": torch.zeros(16, 8, 1, 3, 3)})
