"""Joint image-text embeddings of an ``organfm embed`` folder, for models trained with texts (``--joint``).

Beside the shards, ``joint-images.npy`` holds every image's L2-normalised embedding in the model's joint space
(its image head on the stored pooled features: the backbone never runs again) and, when texts are given,
``joint-texts.npy`` holds each image's text embedding, row for row; ``joint.json`` records what they were made
from, so a second identical call rewrites nothing. The texts themselves are never written (free-text reports
can name people).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from organfm.data.errors import DataError

__all__ = ["JOINT_IMAGES", "JOINT_TEXTS", "embed_joint", "model_text_folder"]

JOINT_IMAGES, JOINT_TEXTS, JOINT_INDEX = "joint-images.npy", "joint-texts.npy", "joint.json"


def model_text_folder(spec: str, index: dict[str, Any]) -> Path | None:
    """The text folder of the model behind a features folder: at ``spec``, at the model spec its index
    records, or beside the weights it records; None for a model without one (and for ``random:``/``timm:``)."""
    from organfm.text.tower import text_folder

    model = index.get("model", {})
    for c in (spec, model.get("spec"), model.get("weights")):
        if c and not str(c).startswith(("random:", "timm:")) and (found := text_folder(c)) is not None:
            return found
    return None


def embed_joint(folder: str | Path, *, texts: list[str] | None = None) -> dict[str, Any]:
    """Write (or keep) the joint embeddings of a complete features folder.

    Args:
        folder: an ``organfm embed`` output folder.
        texts: one text per image, in dataset order, or None (images only).

    Returns:
        what ``joint.json`` records, plus ``reused`` (True when nothing was rewritten).

    Raises:
        ValueError: the model has no text tower, or ``texts`` does not have one entry per image.
    """
    from organfm.features.store import features_key, load_features
    from organfm.outputs.atomic import write_atomic
    from organfm.text.tower import load_joint_text

    folder = Path(folder)
    feats, index = load_features(folder)
    text_dir = model_text_folder(str(index.get("model", {}).get("spec", "")), index)
    if text_dir is None:
        raise ValueError(f"{folder}: the model ({index.get('model', {}).get('spec')}) has no text tower, so no "
                         "joint space; --joint and --texts need a model trained with texts (method imagetext, or "
                         "mmkd with texts)")
    if texts is not None and len(texts) != len(feats):
        raise DataError(f"{folder}: {len(texts)} texts for {len(feats)} images")
    digest = lambda data: hashlib.blake2b(data, digest_size=16).hexdigest()  # noqa: E731
    record = {"image_hash": index["image_hash"], "model_hash": index["model"]["model_hash"],
              "features": features_key(index),  # re-embedded features (another input size) rewrite the joint files
              "text_tower": digest((text_dir / "text.safetensors").read_bytes()),
              "texts": None if texts is None else digest("\n".join(texts).encode())}
    old = folder / JOINT_INDEX
    wanted = [folder / JOINT_IMAGES] + ([folder / JOINT_TEXTS] if texts is not None else [])
    if old.is_file() and json.loads(old.read_text()).get("record") == record and all(p.is_file() for p in wanted):
        return {**record, "reused": True}
    joint = load_joint_text(text_dir)
    if joint.image_dim != feats.shape[1]:
        raise ValueError(f"{text_dir}: its image head takes {joint.image_dim}-d features, {folder} holds "
                         f"{feats.shape[1]}-d ones")
    images = joint.embed_images(feats).numpy()
    write_atomic(folder / JOINT_IMAGES, lambda f: np.save(f, images))
    if texts is not None:
        write_atomic(folder / JOINT_TEXTS, lambda f: np.save(f, joint.embed_texts(texts).numpy()))
    write_atomic(old, json.dumps({"record": record, "dim": joint.embed_dim}, indent=1))
    return {**record, "reused": False}
