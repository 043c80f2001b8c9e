"""End to end: ``organfm evaluate`` writes results.json, results.md, plots and report.html; every protocol wired."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from organfm.cli.main import main
from tests.evaluation.conftest import REPO, TEST_SIZED


def test_evaluate_command_writes_the_results_folder(pneumonia_report: Path):
    results = json.loads((pneumonia_report / "results.json").read_text())
    assert {"task", "models", "rows", "data", "leakage", "notes"} <= set(results)
    assert results["models"]["scratch"]["spec"] == "random:resnet18"
    rows = {(r["protocol"], r["setting"]): r["metrics"] for r in results["rows"]}
    assert set(rows) == {("knn", "k=10"), ("knn", "k=20"), ("linear", "grid")}
    auc = {key: m["auc"]["mean"] for key, m in rows.items()}
    print(f"PneumoniaMNIST (600/200/300), random resnet18: "
          f"{ {k: {n: round(v['mean'], 3) for n, v in m.items()} for k, m in rows.items()} }")
    assert all(v > 0.55 for v in auc.values())  # chance is 0.5: random conv features carry signal
    assert all(m["accuracy"]["n"] == 1 for m in rows.values())
    md = (pneumonia_report / "results.md").read_text()
    assert "| model | setting | accuracy | balanced_accuracy | auc | f1 | majority_accuracy | n |" in md
    assert "MODIFIED train split" in md and "## Headline" in md and "(majority " in md
    assert (pneumonia_report / "report.html").is_file() and (pneumonia_report / "plots" / "knn.png").is_file()


def test_same_seed_same_numbers_and_cached_features(pneumonia_report: Path, data_root: Path, capsys):
    again = pneumonia_report.parent / "again"
    assert main(["evaluate", "--models", "scratch=random:resnet18", "--task",
                 str(REPO / "configs" / "tasks" / "pneumoniamnist.yaml"), f"data.root={data_root}",
                 f"out_dir={again}", "protocols=[knn,linear]", f"cache_dir={pneumonia_report.parent / 'cache'}",
                 *TEST_SIZED]) == 0
    first, second = (json.loads((d / "results.json").read_text()) for d in (pneumonia_report, again))
    assert second["cache"]["hits"] == 3 and second["cache"]["misses"] == 0  # train, val, test features reused
    assert [r["values"] for r in first["rows"]] == [r["values"] for r in second["rows"]]
    assert "scratch" in capsys.readouterr().out


def test_leakage_is_refused_before_any_model_runs(tmp_path: Path, capsys):
    task = _leaky_task(tmp_path)
    code = main(["evaluate", "--models", "s=random:test_resnet", "--task", str(task), f"out_dir={tmp_path / 'leaky'}"])
    assert code == 2 and "1 test image(s) are exact duplicates of train images" in capsys.readouterr().err
    assert not (tmp_path / "leaky" / "cache").exists()  # refused before any feature was extracted
    code = main(["evaluate", "--models", "s=random:test_resnet", "--task", str(task),
                 f"out_dir={tmp_path / 'allowed'}", "allow_leakage=true"])
    assert code == 0
    assert "allow_leakage=true" in json.loads((tmp_path / "allowed" / "results.json").read_text())["notes"][-1]


def _leaky_task(tmp_path: Path) -> Path:
    """A manifest task whose test split holds a byte-identical copy of a train image."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    folder = tmp_path / "imgs"
    folder.mkdir(exist_ok=True)
    lines = ["path,label,split"]
    for i in range(30):
        Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(folder / f"{i}.png")
        lines.append(f"imgs/{i}.png,{i % 2},{('train', 'val', 'test')[i % 3]}")
    lines.append("imgs/0.png,0,test")  # the same file again, on the test side
    (tmp_path / "manifest.csv").write_text("\n".join(lines) + "\n")
    task = tmp_path / "leaky.yaml"
    task.write_text(f"name: leaky\ndata:\n  root: {tmp_path}\n  source: manifest.csv\n  label: label\n"
                    "  image_size: 32\n  dedup: false\nprotocols: [knn]\nknn:\n  k: [3]\n"
                    "report:\n  scatter_points: 0\n")
    return task


def test_segmentation_task_on_real_ct(data_root: Path, tmp_path: Path):
    if not (data_root / "totalseg-example" / "example_ct.nii.gz").is_file():
        pytest.skip("totalseg-example not in the shared data")
    assert main(["evaluate", "--models", "s=random:test_resnet", "--task",
                 str(REPO / "configs" / "tasks" / "totalseg_ct_seg.yaml"), f"data.root={data_root}",
                 f"out_dir={tmp_path}", "segmentation.image_size=32", "segmentation.epochs=1",
                 "segmentation.seeds=1"]) == 0
    (row,) = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert row["protocol"] == "segmentation" and row["classes"] == ["liver", "spleen", "kidney_left",
                                                                    "kidney_right", "stomach"]
    # consistency: the row's mean Dice is the mean of its organs' Dice over the organs scored (NaN: absent from
    # the test slices and the prediction). The known answers are the planted cases of Dice itself
    # (tests/evaluation/test_metrics.py) and of the protocol's scoring (tests/evaluation/protocols/test_segmentation.py)
    per_organ = [row["metrics"][f"dice_{c}"]["mean"] for c in row["classes"]]
    scored = [d for d in per_organ if d is not None and d == d]
    assert scored and all(0 <= d <= 1 for d in scored)
    assert row["metrics"]["mean_dice"]["mean"] == pytest.approx(sum(scored) / len(scored), abs=1e-12)
    print(f"TotalSeg CT 1-epoch U-Net (random test_resnet): mean Dice {row['metrics']['mean_dice']['mean']:.3f}, "
          f"liver {row['metrics']['dice_liver']['mean']:.3f}")
    assert (tmp_path / "report.html").is_file()


def test_organ_clusters_task_on_real_ct_crops(data_root: Path, tmp_path: Path):
    if not (data_root / "totalseg-example" / "example_ct.nii.gz").is_file():
        pytest.skip("totalseg-example not in the shared data")
    assert main(["evaluate", "--models", "s=random:test_resnet", "--task",
                 str(REPO / "configs" / "tasks" / "totalseg_ct_organs.yaml"), f"data.root={data_root}",
                 f"out_dir={tmp_path}", "clusters.embeddings=[tsne]", "clusters.color_by=[class,organ,split]",
                 "report.scatter_points=150"]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    (row,) = results["rows"]
    scores = {k: v["mean"] for k, v in row["metrics"].items()}
    print(f"TotalSeg CT organ crops ({row['setting']}), random test_resnet: {scores}")
    assert scores["knn_accuracy"] > 1.5 / len(results["data"]["classes"])  # well above chance
    assert {"s-tsne-class", "s-tsne-organ", "s-tsne-split"} <= set(results["plots"])
    assert all((tmp_path / p).is_file() for p in results["plots"].values())
