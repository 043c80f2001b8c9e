"""Zero-shot classification: prompts per class, the nearest prompt wins, models without texts are skipped."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from organfm.backbones import TimmBackbone
from organfm.features.extraction import FeatureCache
from organfm.evaluation.protocol import ModelRun
from tests.evaluation.conftest import model_run
from organfm.evaluation.protocols.zeroshot import ZeroShotConfig, class_prompts, zero_shot_probs, zeroshot
from organfm.evaluation.task import load_task
from organfm.evaluation.task_data import SplitData, TaskData
from organfm.text.small import SmallTextEncoder
from organfm.text.tokenizer import WordTokenizer
from organfm.text.tower import JointText, save_joint_text

CLASSES = ["kidney", "liver", "lung"]


def tiny_joint(texts: list[str], image_dim: int, *, embed_dim: int = 8, seed: int = 0) -> JointText:
    """A random JointText over a SmallTextEncoder whose vocabulary is ``texts``' words."""
    torch.manual_seed(seed)
    tower = SmallTextEncoder(WordTokenizer.from_corpus(texts), width=16, depth=1, heads=2)
    return JointText(tower, image_dim=image_dim, embed_dim=embed_dim).eval()


def write_export(folder: Path, *, joint: JointText | None = None, seed: int = 0) -> Path:
    """An export folder as ``organfm export`` writes it: a random ``test_resnet`` (E=96), and ``text/`` if given."""
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    backbone = TimmBackbone("test_resnet")
    folder.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in backbone.model.state_dict().items()},
              str(folder / "backbone.safetensors"), metadata={"architecture": "test_resnet", "format": "pt"})
    (folder / "backbone.json").write_text(json.dumps({"architecture": "test_resnet", "in_chans": 1, "mean": [0.5],
                                                      "std": [0.5], "input_size": [1, 32, 32]}))
    if joint is not None:
        save_joint_text(joint, folder / "text")
    return folder


def write_manifest(root: Path, *, per_class: int = 4, texts: dict[int, str] | None = None) -> Path:
    """``root/manifest.csv``: ``per_class`` random 32 px test images per organ of :data:`CLASSES`, and a
    ``text`` column holding ``texts[i]`` for item i when ``texts`` is given."""
    from PIL import Image

    rng = np.random.default_rng(0)
    (root / "imgs").mkdir(parents=True)
    header = "path,organ,split" + (",text" if texts is not None else "")
    lines = [header]
    for i in range(per_class * len(CLASSES)):
        Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(root / "imgs" / f"{i}.png")
        line = f"imgs/{i}.png,{CLASSES[i % len(CLASSES)]},test"
        lines.append(line + (f",{texts[i]}" if texts is not None else ""))
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return root / "manifest.csv"


def test_prompts_follow_the_template_or_are_given_one_per_class():
    assert class_prompts(["liver", "small_bowel"], ZeroShotConfig(modality="CT")) == [
        "a CT image of the liver", "a CT image of the small bowel"]
    assert class_prompts(["a", "b"], ZeroShotConfig(template="{organ} on {modality}")) == ["a on medical",
                                                                                           "b on medical"]
    assert class_prompts(["a", "b"], ZeroShotConfig(prompts=["x", "y"])) == ["x", "y"]
    with pytest.raises(ValueError, match=r"zeroshot.prompts has 1 prompts for 2 classes \(a, b\)"):
        class_prompts(["a", "b"], ZeroShotConfig(prompts=["x"]))
    with pytest.raises(ValueError, match=r"zeroshot.template='\{organ\} in \{view\}' is not a caption template.*"
                                         r"\{modality\}, \{organ\} and \{label\}"):
        class_prompts(["a"], ZeroShotConfig(template="{organ} in {view}"))


def test_probs_are_a_softmax_of_scaled_cosines():
    image = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    probs = zero_shot_probs(image, text, math.log(10.0))
    # image 0: logits 10 * (1, 0); image 1: 10 * (0.6, 0.8)
    assert torch.allclose(probs[0], torch.tensor([1 / (1 + math.exp(-10)), 1 / (1 + math.exp(10))]))
    assert torch.allclose(probs[1, 1], torch.tensor(1 / (1 + math.exp(-2.0))))
    assert torch.allclose(probs.sum(1), torch.ones(2))


def _one_hot_run(tmp_path: Path, overrides: list[str]) -> tuple[ModelRun, TaskData, ZeroShotConfig]:
    """A model whose class-c images embed exactly on class c's template prompt.

    Images are 2x2 with pixel c lit for class c; the backbone flattens them (E=4); the image head maps the
    one-hot feature e_c to prompt c's text embedding, so cosine(image, prompt c) = 1.
    """
    prompts = class_prompts(CLASSES, ZeroShotConfig())
    joint = tiny_joint(prompts, image_dim=4)
    text = joint.embed_texts(prompts)  # (3, 8), normalised
    with torch.no_grad():
        joint.image_head.weight.zero_()
        joint.image_head.weight[:, :3] = text.T
        joint.image_head.bias.zero_()
    folder = save_joint_text(joint, tmp_path / "text")
    labels = torch.tensor([0, 1, 2, 2, 1, 0, 1])
    images = torch.zeros(len(labels), 1, 2, 2)
    images.view(len(labels), 4)[torch.arange(len(labels)), labels] = 1.0
    split = SplitData(images=images, labels=labels, records=[], identity="one-hot", name="test")
    task = load_task(None, ["data.source=x", "protocols=[zeroshot]", *overrides])
    contract = {"mean": [0.0], "std": [1.0], "model_hash": f"flatten-{len(overrides)}", "text": str(folder),
                "spec": "flatten"}
    run = model_run("flat", nn.Flatten, contract, task, "cpu", FeatureCache(tmp_path / "cache"))
    return run, TaskData(splits={"test": split}, class_names=CLASSES), task.zeroshot


def test_images_on_their_prompt_are_all_right_and_permuted_prompts_all_wrong(tmp_path: Path):
    run, data, settings = _one_hot_run(tmp_path, [])
    (row,) = zeroshot(run, data, settings)
    assert row["metrics"]["accuracy"]["mean"] == 1.0 and row["metrics"]["auc"]["mean"] == 1.0
    assert row["setting"] == "template"
    assert row["prompts"] == ["a medical image of the kidney", "a medical image of the liver",
                              "a medical image of the lung"]
    # the same prompts, shifted by one class: every image now sits on another class's prompt
    shifted = [row["prompts"][1], row["prompts"][2], row["prompts"][0]]
    run, data, settings = _one_hot_run(tmp_path / "shifted", [f"zeroshot.prompts={json.dumps(shifted)}"])
    (row,) = zeroshot(run, data, settings)
    assert row["metrics"]["accuracy"]["mean"] == 0.0 and row["setting"] == "prompts" and row["prompts"] == shifted


def test_joint_text_is_loaded_once_on_the_run_device(tmp_path: Path):
    run, _, _ = _one_hot_run(tmp_path, [])
    joint = run.joint_text()
    assert joint is run.joint_text() and not joint.training and joint.logit_scale.device.type == "cpu"
    no_text = ModelRun("plain", nn.Flatten, {"mean": [0.0], "std": [1.0], "model_hash": "h"}, "cpu", run.cache)
    assert no_text.joint_text() is None


def test_a_text_tower_for_other_features_is_a_clear_error(tmp_path: Path):
    run, data, settings = _one_hot_run(tmp_path, [])
    bad = tiny_joint(["a b"], image_dim=5)
    run.contract["text"] = str(save_joint_text(bad, tmp_path / "other"))
    with pytest.raises(ValueError, match=r"other: its image head takes 5-dim features, the backbone of flat gives 4"):
        zeroshot(run, data, settings)


def test_zeroshot_task_keys():
    task = load_task(None, ["data.source=x", "protocols=[zeroshot]", "zeroshot.modality=CT",
                            "zeroshot.prompts=[a,b]"])
    assert task.zeroshot == ZeroShotConfig(modality="CT", prompts=["a", "b"])
    from organfm.configtree import ConfigError

    with pytest.raises(ConfigError, match=r"unknown task key 'zeroshot\.k'.*zeroshot\.prompts"):
        load_task(None, ["data.source=x", "zeroshot.k=5"])


def test_end_to_end_with_a_text_model_and_one_without(tmp_path: Path):
    """``organfm evaluate``: the export with a text tower gets a zero-shot row, the random model a warning."""
    from organfm.cli.main import main

    write_manifest(tmp_path / "data")
    prompts = class_prompts(CLASSES, ZeroShotConfig(modality="CT"))
    export = write_export(tmp_path / "clip" / "export", joint=tiny_joint(prompts, image_dim=96))
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match=r"scratch: no text tower .*zeroshot skipped; only models trained with "
                                         r"texts \(method imagetext, or mmkd with texts\)"):
        code = main(["evaluate", "--models", f"clip={export.parent},scratch=random:test_resnet", "--task",
                     str(_task_file(tmp_path, "[zeroshot]")), "zeroshot.modality=CT"])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    (row,) = results["rows"]
    assert (row["model"], row["protocol"], row["prompts"]) == ("clip", "zeroshot", prompts)
    assert row["metrics"]["accuracy"]["n"] == 1
    # the known value: each test image's nearest prompt, recomputed here one image at a time from the export
    from organfm.evaluation.task_data import load_task_data
    from organfm.features.encoders import load_encoder
    from organfm.features.extraction import extract_features
    from organfm.text.tower import load_joint_text

    make, contract = load_encoder(str(export.parent))
    task = load_task(str(_task_file(tmp_path, "[zeroshot]")), ["zeroshot.modality=CT"])
    test = load_task_data(task, {"test": None}).splits["test"]
    joint = load_joint_text(export)
    with torch.no_grad():
        images = joint.embed_images(extract_features(make(), test.images, mean=contract["mean"], std=contract["std"]))
        prompt_emb = joint.embed_texts(prompts)
    nearest = [max(range(len(prompts)), key=lambda c, img=img: float(img @ prompt_emb[c])) for img in images]
    expected = sum(int(c == int(y)) for c, y in zip(nearest, test.labels, strict=True)) / len(nearest)
    assert row["metrics"]["accuracy"]["mean"] == pytest.approx(expected, abs=1e-12)
    assert "## zeroshot" in (out / "results.md").read_text()


def _task_file(tmp_path: Path, protocols: str) -> Path:
    task = tmp_path / "task.yaml"
    task.write_text(f"name: text\nout_dir: {tmp_path / 'out'}\ndata:\n  root: {tmp_path / 'data'}\n"
                    f"  source: manifest.csv\n  image_size: 32\nprotocols: {protocols}\nbatch_size: 16\n"
                    "report:\n  scatter_points: 0\n")
    return task
