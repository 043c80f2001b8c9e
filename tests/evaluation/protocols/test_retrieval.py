"""Image <-> text Recall@K: the metric against a naive loop, ties, chunking, and the protocol end to end."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from organfm.data.errors import DataError
from organfm.data.records import Record
from organfm.evaluation.protocols.retrieval import RetrievalConfig, split_texts
from organfm.evaluation.protocols.retrieval import ranks_from_similarity, recall_from_ranks, retrieval_ranks
from organfm.evaluation.task import load_task
from organfm.evaluation.task_data import SplitData
from tests.evaluation.protocols.test_zeroshot import CLASSES, tiny_joint, write_export, write_manifest


def naive_recall(sim: list[list[float]], relevant: list[list[bool]], k: int) -> float:
    """Sort each row's items by score, look for a relevant one among the first k."""
    hits = 0
    for scores, rel in zip(sim, relevant, strict=True):
        order = sorted(range(len(scores)), key=lambda j: -scores[j])
        hits += any(rel[j] for j in order[:k])
    return hits / len(sim)


def _recall_at_k(sim, relevant, ks):
    return recall_from_ranks(ranks_from_similarity(sim, relevant), ks)


def test_recall_matches_a_naive_loop_with_repeated_texts():
    g = torch.Generator().manual_seed(0)
    item_ids = torch.randint(0, 5, (23,), generator=g)  # 23 items, 5 texts: each text repeats
    query_ids = item_ids[torch.randint(0, 23, (37,), generator=g)]  # every query has a relevant item
    sim = torch.randn(37, 23, generator=g)
    relevant = query_ids[:, None] == item_ids[None, :]
    ks = [1, 2, 5, 23]
    got = _recall_at_k(sim, relevant, ks)
    assert got == pytest.approx({k: naive_recall(sim.tolist(), relevant.tolist(), k) for k in ks})
    assert got[23] == 1.0 and 0.0 < got[1] < 1.0


def test_chunked_embeddings_give_the_full_matrix_ranks():
    g = torch.Generator().manual_seed(1)
    queries, items = torch.randn(50, 6, generator=g), torch.randn(31, 6, generator=g)
    item_ids = torch.randint(0, 7, (31,), generator=g)
    query_ids = item_ids[torch.randint(0, 31, (50,), generator=g)]
    full = ranks_from_similarity(queries @ items.T, query_ids[:, None] == item_ids[None, :])
    assert torch.equal(retrieval_ranks(queries, items, query_ids, item_ids, chunk=7), full)
    assert full.dtype == torch.long and int(full.min()) >= 0 and int(full.max()) <= 31


def test_ties_count_against_the_query_but_not_among_relevant_items():
    sim = torch.tensor([[0.5, 0.5, 0.1], [0.5, 0.5, 0.1], [0.2, 0.9, 0.3]])
    relevant = torch.tensor([[False, True, False], [True, True, False], [True, False, True]])
    # row 0: a wrong item ties the right one (rank 1); row 1: two right items tie (rank 0);
    # row 2: best relevant 0.3, beaten by 0.9 only (rank 1)
    assert ranks_from_similarity(sim, relevant).tolist() == [1, 0, 1]
    assert _recall_at_k(sim, relevant, [1, 2]) == {1: pytest.approx(1 / 3), 2: 1.0}


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match=r"1 queries have no relevant item \(first: row 1\)"):
        ranks_from_similarity(torch.zeros(2, 2), torch.tensor([[True, False], [False, False]]))
    with pytest.raises(ValueError, match="same"):
        ranks_from_similarity(torch.zeros(2, 3), torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"positive integer k, got \[0\]"):
        _recall_at_k(torch.zeros(1, 1), torch.ones(1, 1, dtype=torch.bool), [0, 1])


def _split(records: list[Record], labels: list[int]) -> SplitData:
    return SplitData(images=torch.zeros(len(labels), 1, 2, 2), labels=torch.tensor(labels), records=records,
                     identity="x", name="test")


def test_texts_come_from_the_column_else_from_class_captions():
    plain = [Record(path=f"{i}.png", reader="image", key=str(i)) for i in range(3)]
    texts, source = split_texts(_split(plain, [2, 0, 2]), ["liver", "small_bowel", "lung"], RetrievalConfig())
    assert source == "captions"
    assert texts == ["a medical image of the lung", "a medical image of the liver", "a medical image of the lung"]
    # a record's modality column wins over retrieval.modality, as for training captions
    plain[1].meta["modality"] = "CT"
    assert split_texts(_split(plain, [1, 1, 1]), ["liver", "small_bowel"], RetrievalConfig(modality="MR"))[0] == [
        "a MR image of the small bowel", "a CT image of the small bowel", "a MR image of the small bowel"]
    with_text = [Record(path=f"{i}.png", reader="image", key=str(i), meta={"report": f" finding {i} "})
                 for i in range(2)]
    assert split_texts(_split(with_text, [0, 0]), ["a"], RetrievalConfig(text_column="report")) == (
        ["finding 0", "finding 1"], "column:report")
    with_text[1].meta["report"] = ""
    with pytest.raises(DataError, match=r"1.png: its 'report' text is empty"):
        split_texts(_split(with_text, [0, 0]), ["a"], RetrievalConfig(text_column="report"))


def test_retrieval_task_keys():
    from organfm.configtree import ConfigError

    task = load_task(None, ["data.source=x", "protocols=[retrieval]", "retrieval.k=[1,3]",
                            "retrieval.text_column=report"])
    assert task.retrieval == RetrievalConfig(k=[1, 3], text_column="report")
    with pytest.raises(ConfigError, match=r"retrieval\.k\[0\]: expected a number"):
        load_task(None, ["data.source=x", "retrieval.k=[one]"])
    with pytest.raises(ConfigError, match=r"unknown task key 'retrieval\.prompts'.*retrieval\.template"):
        load_task(None, ["data.source=x", "retrieval.prompts=[a]"])


def _naive_rows(export: Path, task, text_of, ks: list[int]) -> dict[str, float]:
    """The expected metrics, recomputed here from the export with Python loops (``text_of(record, label)``)."""
    from organfm.features.extraction import extract_features
    from organfm.features.encoders import load_encoder
    from organfm.evaluation.task_data import load_task_data
    from organfm.text.tower import load_joint_text

    make, contract = load_encoder(str(export))
    test = load_task_data(task, {"test": None}).splits["test"]
    joint = load_joint_text(export)
    with torch.no_grad():
        images = joint.image(extract_features(make(), test.images, mean=contract["mean"], std=contract["std"]))
    texts = [text_of(r, int(y)) for r, y in zip(test.records, test.labels, strict=True)]
    distinct = sorted(set(texts))
    emb = dict(zip(distinct, joint.embed_texts(distinct), strict=True))
    i2t_sim = [[float(img @ emb[t]) for t in distinct] for img in images]
    i2t_rel = [[t == own for t in distinct] for own in texts]
    t2i_sim = [[float(emb[own] @ img) for img in images] for own in texts]
    t2i_rel = [[other == own for other in texts] for own in texts]
    out = {f"i2t_R@{k}": naive_recall(i2t_sim, i2t_rel, k) for k in ks}
    return out | {f"t2i_R@{k}": naive_recall(t2i_sim, t2i_rel, k) for k in ks}


def _task(tmp_path: Path, *overrides: str):
    return load_task(None, [f"data.root={tmp_path / 'data'}", "data.source=manifest.csv", "data.image_size=32",
                            "protocols=[retrieval]", f"out_dir={tmp_path / 'out'}", "report.scatter_points=0",
                            *overrides])


def test_class_captions_end_to_end_and_a_model_without_texts_is_skipped(tmp_path: Path):
    from organfm.evaluation import evaluate_models

    write_manifest(tmp_path / "data", per_class=4)
    captions = [f"a medical image of the {c}" for c in CLASSES]
    export = write_export(tmp_path / "clip", joint=tiny_joint(captions, image_dim=96, seed=3))
    task = _task(tmp_path, "retrieval.k=[1,2,5]")
    with pytest.warns(UserWarning, match=r"scratch: no text tower .*retrieval skipped"):
        results = evaluate_models(task, {"scratch": "random:test_resnet", "clip": str(export)}, log=lambda _: None)
    (row,) = results["rows"]
    assert (row["model"], row["protocol"], row["texts"], row["distinct_texts"], row["items"]) == (
        "clip", "retrieval", "captions", 3, 12)
    assert row["setting"] == "captions (3 texts)"
    expected = _naive_rows(export, task, lambda record, label: captions[label], [1, 2, 5])
    assert {m: s["mean"] for m, s in row["metrics"].items()} == pytest.approx(expected)
    assert row["metrics"]["i2t_R@5"]["mean"] == 1.0  # 5 >= 3 distinct texts: a hit by construction
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["rows"][0]["values"] == row["values"]


def test_a_text_column_is_used_with_repeated_texts_as_equal_answers(tmp_path: Path):
    from organfm.evaluation import evaluate_models

    texts = {i: f"{CLASSES[i % 3]} finding {i % 2}" for i in range(12)}  # 6 texts, each twice
    write_manifest(tmp_path / "data", per_class=4, texts=texts)
    export = write_export(tmp_path / "clip", joint=tiny_joint(list(texts.values()), image_dim=96, seed=4))
    task = _task(tmp_path, "retrieval.k=[1,3]")
    (row,) = evaluate_models(task, {"clip": str(export)}, log=lambda _: None)["rows"]
    distinct = len(set(texts.values()))
    assert (row["texts"], row["distinct_texts"]) == ("column:text", distinct) and distinct == 6
    expected = _naive_rows(export, task, lambda record, label: record.meta["text"], [1, 3])
    assert {m: s["mean"] for m, s in row["metrics"].items()} == pytest.approx(expected)
