"""MMKD's two stages through the engine: a CLIP run exports its text side; an mmkd run with texts distils it
(and a text-less teacher) into a student started from it, resumes exactly, and exports a student that
zero-shot evaluation and retrieval read."""
from __future__ import annotations

import pytest
from safetensors.torch import load_file

from organfm.config import load_config
from organfm.engine.checkpoint import export_backbone
from organfm.engine.pretrain import pretrain
from organfm.text.tower import load_joint_text
from tests.engine.test_every_method import SMALL
from tests.evaluation.protocols.test_zeroshot import write_manifest

COMMON = SMALL + ["backbone.name=test_convnext", "views.global_size=32", "views.num_local_views=0"]


def _weights(run):
    export_backbone(run)
    return {**load_file(run / "export" / "backbone.safetensors"),
            **{f"text.{k}": v for k, v in load_file(run / "export" / "text" / "text.safetensors").items()}}


@pytest.mark.slow
def test_clip_then_mmkd_with_texts_resumes_exactly_exports_and_evaluates(tmp_path):
    clip = tmp_path / "clip"
    pretrain(load_config("imagetext", None, COMMON + ["trainer.max_steps=2", f"trainer.out_dir={clip}"]))
    joint = load_joint_text(clip)
    assert joint.embed_texts(["a medical image of the organ 00"]).shape == (1, 128)
    student = COMMON + [f"method.teachers=[clip={clip},r=random:test_resnet]", "method.texts=captions",
                        "method.teacher_filter=caption", f"method.text_init={clip}", "method.projector_steps=5",
                        f"backbone.pretrained_file={clip / 'export' / 'backbone.safetensors'}",
                        f"method.features_dir={tmp_path / 'feats'}"]
    full = pretrain(load_config("mmkd", None, student + ["trainer.max_steps=2", f"trainer.out_dir={tmp_path / 'full'}"]))
    pretrain(load_config("mmkd", None, student + ["trainer.max_steps=1", f"trainer.out_dir={tmp_path / 'part'}"]))
    pretrain(load_config(None, tmp_path / "part" / "config.yaml", ["trainer.max_steps=2"]), resume_dir=tmp_path / "part")
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "part")
    assert a.keys() == b.keys() and any(k.startswith("text.tower.") for k in a)
    assert max((a[k] - b[k]).abs().max().item() for k in a) == 0.0
    # the student started from the CLIP model's text side and moved away from it
    start = load_file(clip / "export" / "text" / "text.safetensors")
    assert start.keys() == {k[5:] for k in a if k.startswith("text.")}
    assert any(not (start[k] == a[f"text.{k}"]).all() for k in start)
    assert full.export.parent.joinpath("text", "tokenizer.json").is_file()

    from organfm.evaluation import evaluate_models, load_task

    manifest = write_manifest(tmp_path / "data", per_class=2)
    task = load_task(None, [f"data.root={tmp_path / 'data'}", f"data.source={manifest.name}", "data.image_size=32",
                            "protocols=[zeroshot,retrieval]", "data.split_fractions=[0.0,0.0,1.0]",
                            f"out_dir={tmp_path / 'eval'}", "report.scatter_points=0"])
    rows = evaluate_models(task, {"clip": str(clip), "student": str(tmp_path / "full")})["rows"]
    assert {(r["model"], r["protocol"]) for r in rows} == {(m, p) for m in ("clip", "student")
                                                           for p in ("zeroshot", "retrieval")}
