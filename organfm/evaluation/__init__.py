"""Evaluation: protocols on frozen (or fine-tuned) encoders, one results folder per task.

Extract once, then run pure protocols on tensors: ``extract_features`` (cached by ``FeatureCache``)
feeds ``knn_classify``, ``linear_probe`` (``probes``), ``run_few_shot`` and ``cluster_scores``; fine-tuning
(``finetune_classification``, ``finetune_segmentation``) trains on the images. Each registered protocol is one
module of ``organfm.evaluation.protocols`` named like it. ``evaluate_models`` runs a task config
(``load_task``) for several models (``load_encoder`` specs) and writes ``results.json``, ``results.md``, plots
and a self-contained ``report.html``; ``organfm evaluate`` is its command line.
"""
from __future__ import annotations

from organfm.data.subsets import stratified_subset
from organfm.evaluation.finetuning import finetune_classification
from organfm.evaluation.leakage import LeakageError, check_leakage
from organfm.evaluation.maps import embed_2d
from organfm.evaluation.metrics import classification_metrics, segmentation_metrics, summarize
from organfm.evaluation.probes import knn_classify, linear_probe
from organfm.evaluation.protocol import get_protocol, list_protocols, register_protocol
from organfm.evaluation.protocols.clusters import cluster_scores
from organfm.evaluation.protocols.fewshot import few_shot_settings, run_few_shot
from organfm.evaluation.protocols.segmentation import finetune_segmentation, load_segmentation_split
from organfm.evaluation.suite import evaluate_models
from organfm.evaluation.task import TaskConfig, load_task
from organfm.features.encoders import load_encoder, parse_models
from organfm.features.extraction import FeatureCache, extract_features, normalize_images

__all__ = [
    "FeatureCache", "LeakageError", "TaskConfig", "check_leakage", "classification_metrics", "cluster_scores",
    "embed_2d", "evaluate_models", "extract_features", "few_shot_settings", "finetune_classification",
    "finetune_segmentation", "get_protocol", "knn_classify", "linear_probe", "list_protocols", "load_encoder",
    "load_segmentation_split", "load_task", "normalize_images", "register_protocol",
    "parse_models", "run_few_shot", "segmentation_metrics", "stratified_subset", "summarize",
]
