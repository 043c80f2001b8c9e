"""End-to-end pretraining on the embedded synthetic default: resume exactness, checkpoints, export."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from organfm.config import load_config
from organfm.engine.checkpoint import export_backbone, latest_checkpoint, load_checkpoint
from organfm.engine.loop import NonFiniteLossError
from organfm.engine.pretrain import pretrain

TINY = ["backbone.name=test_convnext", "data.synthetic_organs=4", "data.synthetic_images_per_organ=16",
        "data.synthetic_size=32", "views.global_size=32", "views.local_size=32", "views.num_local_views=2",
        "trainer.batch_size=8", "trainer.num_workers=0", "trainer.progress=false", "trainer.deterministic=true",
        "trainer.epochs=4", "trainer.log_every=1"]
HEAD = ["method.out_dim=64", "method.hidden_dim=32", "method.bottleneck_dim=16"]


def run(tmp, name, method="coda", extra=(), resume=False):
    overrides = TINY + (HEAD if method != "supcon" else []) + list(extra)
    if resume:
        cfg = load_config(None, tmp / name / "config.yaml", list(extra))
        return pretrain(cfg, resume_dir=tmp / name)
    return pretrain(load_config(method, None, overrides + [f"trainer.out_dir={tmp / name}"]))


def test_resumed_run_matches_uninterrupted_run(tmp_path):
    full = run(tmp_path, "full", extra=["trainer.max_steps=6"])
    part = run(tmp_path, "part", extra=["trainer.max_steps=3"])
    assert part.result.step == 3 and latest_checkpoint(tmp_path / "part").name == "step-00000003.ckpt"
    resumed = run(tmp_path, "part", extra=["trainer.max_steps=6"], resume=True)
    assert resumed.result.start_step == 3 and resumed.result.step == 6
    a, b = load_file(full.export), load_file(resumed.export)
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
    # the optimizer state and the DINO centre resumed too
    ca, cb = load_checkpoint(full.checkpoint), load_checkpoint(resumed.checkpoint)
    assert torch.allclose(ca["method"]["intra_loss.center"], cb["method"]["intra_loss.center"], atol=1e-7)
    # schedules follow trainer.epochs, not max_steps: a 3-step and a 6-step run log the same lr at step 3
    assert part.result.last_logs["lr"] == pytest.approx(full_lr_at(tmp_path / "full", 3))


def full_lr_at(run_dir, step):
    import csv

    rows = list(csv.DictReader(open(next((run_dir / "logs" / "csv").rglob("metrics.csv")))))
    return float(next(r["lr"] for r in rows if int(r["step"]) == step))


@pytest.mark.parametrize("method", ["dino", "supcon"])
def test_baselines_run_and_export(tmp_path, method):
    s = run(tmp_path, method, method=method, extra=["trainer.max_steps=2"])
    assert s.result.step == 2 and torch.isfinite(torch.tensor(s.result.last_logs["loss"]))
    contract = json.loads((s.export.parent / "backbone.json").read_text())
    assert contract["architecture"] == "test_convnext" and contract["method"] == method
    assert contract["network"] == ("teacher" if method == "dino" else "student")
    if method == "supcon":
        with pytest.raises(ValueError, match="this method has no teacher"):
            export_backbone(s.export.parent.parent, out_dir=tmp_path / "t", network="teacher")


def test_export_loads_in_timm_and_matches_the_teacher(tmp_path):
    import timm

    s = run(tmp_path, "r", extra=["trainer.max_steps=2"])
    contract = json.loads((s.export.parent / "backbone.json").read_text())
    assert contract["in_chans"] == 1 and contract["organs"] == [f"organ_{i:02d}" for i in range(4)]
    assert contract["input_size"] == [1, 32, 32] and contract["mean"] == [0.5]
    model = timm.create_model(contract["architecture"], pretrained=True, in_chans=1, num_classes=0,
                              pretrained_cfg_overlay=dict(file=str(s.export)))
    ckpt = load_checkpoint(s.checkpoint)
    teacher = {k[len("teacher.backbone.model."):]: v for k, v in ckpt["method"].items()
               if k.startswith("teacher.backbone.model.")}
    for k, v in model.state_dict().items():
        assert torch.equal(v, teacher[k]), k
    student = {k[len("student.backbone.model."):]: v for k, v in ckpt["method"].items()
               if k.startswith("student.backbone.model.")}
    assert any(not torch.equal(student[k], teacher[k]) for k in teacher)  # the export is the teacher, not the student
    # a second export of the same checkpoint rewrites identical files
    w2, _ = export_backbone(tmp_path / "r", out_dir=tmp_path / "again")
    assert load_file(w2).keys() == load_file(s.export).keys()
    assert contract["network"] == "teacher"
    # the student on request (a diagnostic: how far the EMA teacher lags it)
    w3, c3 = export_backbone(tmp_path / "r", out_dir=tmp_path / "student", network="student")
    assert json.loads(c3.read_text())["network"] == "student"
    exported = load_file(w3)
    assert exported.keys() == student.keys() and all(torch.equal(exported[k], student[k]) for k in student)
    with pytest.raises(ValueError, match="'teacher' or 'student'"):
        export_backbone(tmp_path / "r", out_dir=tmp_path / "x", network="head")


def test_checkpoints_are_pruned_and_loadable_weights_only(tmp_path):
    run(tmp_path, "r", extra=["trainer.max_steps=5", "trainer.checkpoint_every=1", "trainer.keep_checkpoints=2"])
    names = sorted(p.name for p in (tmp_path / "r" / "checkpoints").iterdir())
    assert names == ["step-00000004.ckpt", "step-00000005.ckpt"]  # no temp files left behind
    ckpt = load_checkpoint(tmp_path / "r" / "checkpoints" / names[-1])
    assert ckpt["step"] == 5 and ckpt["config"]["method"]["name"] == "coda"


def test_a_run_gives_back_the_process_thread_count_and_deterministic_mode(tmp_path):
    # both are process-wide: a run that kept them would change every later run in the process (a pinned
    # thread count changes float reductions, so a later "bit-identical" resume would differ by 1e-9)
    before = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    wanted = 1 if before[0] > 1 else 2
    run(tmp_path, "r", extra=["trainer.max_steps=1", f"trainer.torch_threads={wanted}", "trainer.monitor_every=0"])
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == before


def test_non_finite_loss_stops_with_step_and_checkpoint(tmp_path):
    with pytest.raises(NonFiniteLossError, match="at step 0.*Last good checkpoint: none yet"):
        run(tmp_path, "nan", extra=["trainer.max_steps=2", "views.mean=nan"])


def test_last_layer_is_frozen_during_the_first_epoch(tmp_path):
    s = run(tmp_path, "r", extra=["trainer.max_steps=2", "optim.freeze_last_layer_epochs=1"])
    ckpt = load_checkpoint(s.checkpoint)["method"]
    init = run(tmp_path, "r0", extra=["trainer.max_steps=1", "optim.lr=0"])  # lr 0: weights as initialised
    ckpt0 = load_checkpoint(init.checkpoint)["method"]
    assert torch.equal(ckpt["student.ins_head.last_layer.weight_v"], ckpt0["student.ins_head.last_layer.weight_v"])
    assert not torch.equal(ckpt["student.ins_head.mlp.0.weight"], ckpt0["student.ins_head.mlp.0.weight"])


def test_skipped_items_are_reported_at_the_end(tmp_path):
    import numpy as np
    from PIL import Image

    for organ in ("hand", "chest"):
        (tmp_path / "imgs" / organ).mkdir(parents=True)
        for i in range(8):
            Image.fromarray((np.random.default_rng([i, len(organ)]).random((32, 32)) * 255).astype("uint8")).save(
                tmp_path / "imgs" / organ / f"{i}.png")
    (tmp_path / "imgs" / "hand" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    s = pretrain(load_config("coda", None, TINY + HEAD + [f"data={tmp_path / 'imgs'}", "data.on_error=skip", "data.split=null",
                                                          "trainer.max_steps=4", f"trainer.out_dir={tmp_path / 'r'}"]))
    data = json.loads((tmp_path / "r" / "data.json").read_text())
    # the broken file passes the index (its header is checked lazily) and is skipped each time training draws it
    assert s.skipped >= 1 and data["skipped_logged"] == s.skipped
    assert f"({s.skipped} unreadable, skipped" in s.line("coda", "test_convnext")


PANFM_TINY = ["data.synthetic_organs=3", "data.synthetic_images_per_organ=8", "data.synthetic_size=16",
              "trainer.batch_size=4", "trainer.num_workers=0", "trainer.progress=false", "trainer.max_steps=1",
              "trainer.monitor_every=0", *HEAD]


def test_backbone_keys_size_the_organ_set_vit_and_its_export_records_them(tmp_path):
    s = pretrain(load_config("panfm", None, PANFM_TINY + [
        "backbone.embed_dim=24", "backbone.depth=3", "backbone.num_heads=3", "backbone.patch_size=4",
        f"trainer.out_dir={tmp_path / 'vit'}"]))
    contract = json.loads((s.export.parent / "backbone.json").read_text())
    args = contract["backbone_args"]
    assert (args["embed_dim"], args["depth"], args["num_heads"], args["patch_size"]) == (24, 3, 3, 4)
    assert contract["synthetic_subjects"] == {"seed": 0, "index_offset": 0, "num_subjects": 8, "dominant": 0,
                                              "dominant_strength": 0.35, "subtle_strength": 0.12, "noise": 0.05,
                                              "dominant_gain": 0.0, "missing_prob": 0.2,
                                              "dominant_missing_prob": 0.1, "mnar_strength": 1.0}
    weights = load_file(s.export)
    assert weights["tokenizers.0.weight"].shape == (24, 1, 4, 4) and "blocks.2.attn.qkv.weight" in weights


def test_backbone_size_keys_are_refused_by_a_backbone_without_them(tmp_path):
    from organfm.config import ConfigError

    with pytest.raises(ConfigError, match="backbone.depth, backbone.num_heads cannot size backbone 'test_convnext'"):
        run(tmp_path, "convnext", extra=["trainer.max_steps=1", "backbone.depth=3", "backbone.num_heads=2"])


def test_the_summary_counts_every_split_and_warns_of_an_organ_missing_from_train(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    lines = ["path,organ,split"]
    for i in range(12):
        organ, split = ("lung", "train") if i < 10 else ("liver", "test")  # the one liver patient went to test
        Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(tmp_path / f"{i}.png")
        lines.append(f"{i}.png,{organ},{split}")
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    summary = run(tmp_path, "splits", extra=["trainer.max_steps=1", "trainer.batch_size=4",
                                             f"data.source={tmp_path / 'm.csv'}", "trainer.monitor_every=0"])
    err = capsys.readouterr().err
    assert "1 organ(s) have no image in the 'train' split and are not trained on: liver" in err
    assert "data.split=all" in err
    assert "(split train; the source's splits: test 2, train 10)" in summary.line()
    everything = run(tmp_path, "all", extra=["trainer.max_steps=1", "trainer.batch_size=4", "data.split=all",
                                              f"data.source={tmp_path / 'm.csv'}", "trainer.monitor_every=0"])
    assert everything.num_images == 12 and "liver" in everything.organs
    assert "no image in the" not in capsys.readouterr().err
