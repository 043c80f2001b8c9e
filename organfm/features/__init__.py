"""Features of a frozen encoder: load it, extract once, store the rows, embed them jointly with texts.

Sits below ``organfm.batches`` (MMKD's teacher store reads it) and ``organfm.evaluation`` (every frozen
protocol reads it), which both import it; it imports neither.

- ``encoders``: a model spec (run folder, export, weights file, ``random:<arch>``, ``timm:<arch>:<file>``) ->
  a backbone factory and its contract (:func:`load_encoder`); loading never writes into a run folder.
- ``extraction``: pooled features of images in order (:func:`extract_features`) and their on-disk cache
  (:class:`FeatureCache`).
- ``store``: one model's features of a whole image set as resumable shards (``organfm embed``,
  :func:`embed_dataset`, :func:`load_features`, :func:`open_features`).
- ``shards``: rows of ``.npy`` shard files read on demand (:class:`ShardRows`).
- ``joint``: joint image-text embeddings of a features folder (:func:`embed_joint`).
"""
from __future__ import annotations

from organfm.features.encoders import hash_file, load_encoder, parse_models
from organfm.features.extraction import FeatureCache, extract_features, normalize_images
from organfm.features.joint import embed_joint
from organfm.features.shards import ShardRows, write_rows
from organfm.features.store import EmbedResult, embed_dataset, load_features, open_features

__all__ = ["EmbedResult", "FeatureCache", "ShardRows", "embed_dataset", "embed_joint", "extract_features",
           "hash_file", "load_encoder", "load_features", "normalize_images", "open_features", "parse_models",
           "write_rows"]
