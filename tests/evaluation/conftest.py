"""Small real-data splits shared by the evaluation tests (read once per session, a few hundred images)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from organfm.evaluation.task import load_task
from organfm.evaluation.task_data import TaskData, load_task_data

REPO = Path(__file__).resolve().parents[2]


def small_task(name: str, data_root: Path, *overrides: str):
    """A task from ``configs/tasks/<name>.yaml`` reading ``data_root``, with test-sized overrides."""
    return load_task(REPO / "configs" / "tasks" / f"{name}.yaml", [f"data.root={data_root}", *overrides])


@pytest.fixture(scope="session")
def mednist_small(mednist_archive: Path, data_root: Path) -> TaskData:
    """MedNIST at 32 px: about 600 train, 150 val, 300 test images, stratified over the 6 regions."""
    task = small_task("mednist", data_root, "data.image_size=32")
    return load_task_data(task, {"train": 600, "val": 150, "test": 300})


@pytest.fixture(scope="session")
def pneumonia_small(data_root: Path) -> TaskData:
    """PneumoniaMNIST at 32 px: about 600 train, 200 val, 300 test images."""
    if not (data_root / "pneumoniamnist-unofficial" / "pneumoniamnist.npz").is_file():
        pytest.skip("pneumoniamnist-unofficial/pneumoniamnist.npz not in the shared data")
    task = small_task("pneumoniamnist", data_root)
    return load_task_data(task, {"train": 600, "val": 200, "test": 300})


@pytest.fixture(scope="session")
def random_features():
    """Features of a split from a seeded random timm ``test_resnet`` (the floor of every protocol)."""
    from organfm.features.extraction import extract_features
    from organfm.features.encoders import load_encoder

    make, contract = load_encoder("random:test_resnet", image_size=32, seed=0)
    backbone = make()
    done: dict[int, dict[str, torch.Tensor]] = {}

    def features(data: TaskData) -> dict[str, torch.Tensor]:
        if id(data) not in done:
            done[id(data)] = {name: extract_features(backbone, split.images, mean=contract["mean"],
                                                     std=contract["std"]) for name, split in data.splits.items()}
        return done[id(data)]

    return features


@pytest.fixture(scope="session")
def pneumonia_report(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``organfm evaluate`` on real PneumoniaMNIST (random resnet18, kNN + linear), test-sized: its results folder."""
    from organfm.cli.main import main

    if not (data_root / "pneumoniamnist-unofficial" / "pneumoniamnist.npz").is_file():
        pytest.skip("pneumoniamnist-unofficial/pneumoniamnist.npz not in the shared data")
    root = tmp_path_factory.mktemp("pneumonia-eval")
    code = main(["evaluate", "--models", "scratch=random:resnet18", "--task",
                 str(REPO / "configs" / "tasks" / "pneumoniamnist.yaml"), f"data.root={data_root}",
                 f"out_dir={root / 'out'}", "protocols=[knn,linear]", f"cache_dir={root / 'cache'}",
                 *TEST_SIZED])
    assert code == 0
    return root / "out"


# caps that keep an end-to-end run to seconds on 2 busy cores
TEST_SIZED = ("data.max_train=600", "data.max_val=200", "data.max_test=300", "linear.epochs=50",
              "report.scatter_points=120")


def model_run(name: str, make_backbone, contract: dict, task, device: str, cache):
    """A ``ModelRun`` of ``task``'s seed and batch size (what ``evaluate_models`` builds per model)."""
    from organfm.evaluation.protocol import ModelRun

    return ModelRun(name, make_backbone, contract, device, cache, seed=task.seed, batch_size=task.batch_size)


def run_protocol(name: str, run, task, data=None) -> list[dict]:
    """Protocol ``name``'s rows for ``run``, called as ``evaluate_models`` calls it (own-data protocols get
    ``task.data``, the others ``data``)."""
    from organfm.evaluation.protocol import get_protocol

    spec = get_protocol(name)
    return spec(run, task.data if spec.inputs == "own" else data, task)


def feature_task(tmp_path: Path, splits: dict[str, tuple[torch.Tensor, torch.Tensor]], class_names: list[str],
                 *overrides: str):
    """A model whose features ARE the given (N, E) points, with ``task``'s settings: ``(run, data, task)``.

    Each split's points are stored as (N, 1, 1, E) images and the model flattens them (mean 0, std 1), so a
    protocol on frozen features sees exactly the points the test wrote down.
    """
    from torch import nn

    from organfm.evaluation.task_data import SplitData
    from organfm.features.extraction import FeatureCache

    data = TaskData(splits={name: SplitData(images=points[:, None, None, :].float(), labels=labels.long(),
                                            records=[], identity=f"points-{name}-{tmp_path.name}", name=name)
                            for name, (points, labels) in splits.items()}, class_names=class_names)
    task = load_task(None, ["data.source=x", *overrides])
    contract = {"mean": [0.0], "std": [1.0], "model_hash": "flatten"}
    return model_run("points", nn.Flatten, contract, task, "cpu", FeatureCache(tmp_path / "cache")), data, task
