"""``organfm export --out``: only into a new, empty or earlier export folder; never over the user's files."""
from __future__ import annotations

from organfm.cli.main import main
from organfm.config import load_config
from organfm.engine.pretrain import pretrain

TINY = ["backbone.name=test_convnext", "data.synthetic_organs=2", "data.synthetic_images_per_organ=4",
        "data.synthetic_size=32", "views.global_size=32", "views.local_size=32", "views.num_local_views=1",
        "trainer.batch_size=4", "trainer.num_workers=0", "trainer.progress=false", "trainer.max_steps=1",
        "trainer.torch_threads=1", "trainer.monitor_every=0", "method.out_dim=32", "method.hidden_dim=16",
        "method.bottleneck_dim=8"]


def test_export_out_refuses_a_foreign_folder_and_reuses_its_own(tmp_path, capsys):
    pretrain(load_config("coda", None, TINY + [f"trainer.out_dir={tmp_path / 'run'}"]))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "backbone.txt").write_text("my notes")
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "mine")]) == 2
    assert "did not write" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["backbone.txt"]
    for _ in range(2):  # a new folder, then the same folder again
        assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "exp")]) == 0
    assert (tmp_path / "exp" / "backbone.safetensors").is_file() and (tmp_path / "exp" / ".organfm-output").is_file()
    (tmp_path / "file").write_text("x")
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "file")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
