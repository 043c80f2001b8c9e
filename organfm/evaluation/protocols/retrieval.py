"""Image <-> text retrieval Recall@K in a model's joint space (CLIP's protocol, MMKD-CLIP's M5).

The text of each test image is its manifest's ``retrieval.text_column`` (a report, a caption) when the
data has that column; otherwise a caption templated from its class name, like the training captions ("a
CT image of the liver"; the modality is the record's ``modality`` column, else ``retrieval.modality``).

Relevance is "same text string". Templated captions repeat (one per class), and a manifest may repeat a
report ("no acute findings"), so:

- image -> text: each image queries the DISTINCT texts, and any copy of its own text is a hit. With class
  captions this is zero-shot classification over the caption set (``i2t_R@1`` is its accuracy), and every
  ``i2t_R@k`` with k >= the number of distinct texts is 1 by construction (the row says how many there are);
- text -> image: each image's text queries all test images, and every image with the same text is a hit.

Ties are counted against the query (``organfm.evaluation.retrieval``). Models without a text tower are
skipped with a warning.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from organfm.evaluation.protocol import ModelRun, make_row, register_protocol
from organfm.evaluation.protocols.zeroshot import check_template, no_text_warning
from organfm.evaluation.retrieval import recall_from_ranks, retrieval_ranks
from organfm.evaluation.task_data import SplitData, TaskData
from organfm.text.captions import TEMPLATE, caption, record_texts

__all__ = ["RetrievalConfig", "retrieval", "split_texts"]


@dataclass
class RetrievalConfig:
    """Recall@k both ways for each k; texts from ``text_column``, else captions from ``template``."""

    k: list[int] = field(default_factory=lambda: [1, 5, 10])
    text_column: str = "text"
    modality: str = "medical"  # templated captions, for records without a modality column
    template: str = TEMPLATE  # placeholders: {modality}, {organ} (the class name), {label} (empty here)


def split_texts(split: SplitData, class_names: list[str], config: RetrievalConfig,
                where: str = "data") -> tuple[list[str], str]:
    """The text of each item of ``split`` and where the texts came from.

    Returns:
        (N texts, ``"column:<name>"`` or ``"captions"``).

    Raises:
        organfm.data.errors.DataError: some records have the column and one has an empty text (naming it).
        ValueError: a bad template.
    """
    texts = record_texts(split.records, mode="auto", column=config.text_column, where=where)
    if texts is not None:
        return texts, f"column:{config.text_column}"
    check_template(config.template, "retrieval.template")
    return [caption(class_names[int(label)], modality=str(r.meta.get("modality") or config.modality),
                    template=config.template)
            for r, label in zip(split.records, split.labels.tolist(), strict=True)], "captions"


@register_protocol("retrieval", config=RetrievalConfig, inputs="features", splits=("test",))
def retrieval(run: ModelRun, data: TaskData) -> list[dict[str, Any]]:
    """One row: ``i2t_R@k`` and ``t2i_R@k`` (fractions) on test, with the text source and distinct texts."""
    s = run.task.retrieval
    bad = [k for k in s.k if k < 1]
    if not s.k or bad:
        raise ValueError(f"retrieval.k must be a list of positive integers, got {s.k}")
    joint = run.joint_text()
    if joint is None:
        no_text_warning(run, "retrieval")
        return []
    test = data.splits["test"]
    texts, source = split_texts(test, data.class_names, s, where=run.task.data.source or "data")
    distinct = list(dict.fromkeys(texts))
    index = {t: i for i, t in enumerate(distinct)}
    text_ids = torch.tensor([index[t] for t in texts], dtype=torch.long)
    images = run.joint_images(test)
    text_emb = joint.embed_texts(distinct).to(images.device)
    i2t = retrieval_ranks(images, text_emb, text_ids, torch.arange(len(distinct)))
    t2i = retrieval_ranks(text_emb[text_ids.to(images.device)], images, text_ids, text_ids)
    values = {f"i2t_R@{k}": [v] for k, v in recall_from_ranks(i2t, s.k).items()}
    values |= {f"t2i_R@{k}": [v] for k, v in recall_from_ranks(t2i, s.k).items()}
    setting = f"{source} ({len(distinct)} texts)"
    return [make_row(run.name, "retrieval", setting, values, texts=source, distinct_texts=len(distinct),
                     items=len(texts))]
