"""organfm: pretrain, distill and benchmark organ-aware foundation models for medical imaging."""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "Preprocess", "create_backbone", "create_method", "embed", "evaluate", "evaluate_models",
           "extract_features", "list_backbones", "list_methods", "load", "load_config", "load_encoder", "pretrain"]


def __getattr__(name: str):
    # lazy: `import organfm` stays cheap; torch/timm load on first use
    if name in ("create_backbone", "list_backbones"):
        from organfm import backbones

        return getattr(backbones, name)
    if name in ("create_method", "list_methods"):
        from organfm import methods

        return getattr(methods, name)
    if name == "load_config":
        from organfm.config import load_config

        return load_config
    if name in ("extract_features", "load_encoder"):
        from organfm import features

        return getattr(features, name)
    if name == "evaluate_models":
        from organfm import evaluation

        return evaluation.evaluate_models
    if name in ("load", "Preprocess"):
        from organfm import contract

        return getattr(contract, name)
    if name in ("pretrain", "evaluate", "embed"):  # the functions the CLI commands call
        from organfm import api

        return getattr(api, name)
    raise AttributeError(f"module 'organfm' has no attribute {name!r}")
