"""The export as a model folder the ecosystem loads: timm's ``config.json`` + ``model.safetensors``, a model card.

An export folder holds, beside organfm's own ``backbone.safetensors`` + ``backbone.json`` (the data contract)::

    config.json        timm's layout (architecture, num_classes=0, in_chans=1, pretrained_cfg with the
                       contract's input size, mean/std, interpolation, crop_pct=1): what
                       ``timm.create_model("local-dir:<export>", pretrained=True)`` reads
    model.safetensors  the same weights, by the name timm and the Hugging Face hub look for
    README.md          the model card (method, training data in counts only, steps, health, teachers,
                       evaluation results once ``organfm evaluate`` has run on the export, intended use, licence)
    evaluation.json    what ``organfm evaluate`` measured on this export, per task (written by it)

``config.json`` and ``model.safetensors`` are written for timm architectures only: organfm's own networks
(3D, organ-set) are not timm models and load with ``organfm.load``. The folder is what a user pushes to the
hub as it is (``huggingface-cli upload``).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from organfm.outputs.atomic import atomic_path, write_atomic

__all__ = ["CARD_FILE", "EVALUATION_FILE", "TIMM_CONFIG", "TIMM_WEIGHTS", "data_facts", "record_evaluation",
           "render_model_card", "timm_config", "write_model_folder"]

TIMM_CONFIG = "config.json"
TIMM_WEIGHTS = "model.safetensors"
CARD_FILE = "README.md"
EVALUATION_FILE = "evaluation.json"
DEFAULT_LICENSE = "other"


def _method_summary(method: str) -> str:
    """The registered method's own ``card_summary`` (a plain name for a method not registered here)."""
    from organfm.methods.registry import get_method, list_methods

    summary = getattr(get_method(method), "card_summary", "") if method in list_methods() else ""
    return summary or f"organfm method `{method}`"


def is_timm_architecture(arch: str) -> bool:
    """A timm architecture that organfm does not register itself (those are not timm models)."""
    import timm

    from organfm.backbones import list_backbones

    return bool(arch) and arch not in list_backbones() and timm.is_model(arch)


def timm_config(contract: dict[str, Any]) -> dict[str, Any]:
    """timm's ``config.json`` for an export: the architecture and a ``pretrained_cfg`` from the contract."""
    size = [int(s) for s in contract["input_size"]]
    cfg = {
        "input_size": size, "fixed_input_size": False,
        "interpolation": contract.get("interpolation") or "bilinear", "crop_pct": 1.0, "crop_mode": "center",
        "mean": [float(m) for m in contract["mean"]], "std": [float(s) for s in contract["std"]],
        "num_classes": 0, "license": contract.get("license", DEFAULT_LICENSE),
        "tag": f"organfm_{contract.get('method', 'export')}",
    }
    return {"architecture": contract["architecture"], "num_classes": 0, "in_chans": int(contract.get("in_chans", 1)),
            "model_args": {"in_chans": int(contract.get("in_chans", 1)), "num_classes": 0},
            "pretrained_cfg": cfg}


def data_facts(summary: dict[str, Any] | None) -> dict[str, Any]:
    """What a model card may say of the training data: counts and shapes, never a path or a file name."""
    if not summary:
        return {}
    facts: dict[str, Any] = {}
    n = summary.get("num_images", summary.get("n_items"))
    if n is not None:
        facts["num_images"] = int(n)
    organs = summary.get("organs")
    if isinstance(organs, dict):
        facts["organs"] = {str(k): int(v) for k, v in organs.items() if isinstance(v, (int, float))}
    elif isinstance(organs, list):
        facts["organs"] = [str(o) for o in organs]
    for key in ("splits", "modalities", "image_shape", "dim", "skipped_logged"):
        if summary.get(key) is not None:
            facts[key] = summary[key]
    facts["procedural"] = bool(summary.get("procedural"))  # a generator's own summary says so
    return facts


def write_model_folder(out: str | Path, contract: dict[str, Any], weights_path: str | Path) -> None:
    """Write ``config.json`` + ``model.safetensors`` (timm architectures) and ``README.md`` into ``out``."""
    out = Path(out)
    if is_timm_architecture(str(contract.get("architecture", ""))):
        write_atomic(out / TIMM_CONFIG, json.dumps(timm_config(contract), indent=2))
        _link_or_copy(Path(weights_path), out / TIMM_WEIGHTS)
    else:  # a stale timm pair from an earlier export of another architecture would mislead timm
        for name in (TIMM_CONFIG, TIMM_WEIGHTS):
            (out / name).unlink(missing_ok=True)
    write_model_card(out)


def write_model_card(folder: str | Path) -> Path:
    """(Re)write ``folder/README.md`` from its ``backbone.json`` and ``evaluation.json``."""
    folder = Path(folder)
    contract = json.loads((folder / "backbone.json").read_text(encoding="utf-8"))
    evaluation = _read_json(folder / EVALUATION_FILE)
    path = folder / CARD_FILE
    write_atomic(path, render_model_card(contract, evaluation=evaluation, folder=folder))
    return path


def record_evaluation(folder: str | Path, *, task: str, model: str, rows: list[dict[str, Any]]) -> None:
    """Keep ``organfm evaluate``'s results for this export (per task) and re-render its model card.

    Args:
        folder: the export folder (holds ``backbone.json``).
        task: the task's name.
        model: the name the export had in the evaluation.
        rows: the evaluation's result rows of this model (``protocol``, ``setting``, ``metrics``).
    """
    folder = Path(folder)
    evaluation = _read_json(folder / EVALUATION_FILE) or {}
    kept = []
    for row in rows:
        metrics = {k: {"mean": v.get("mean"), "sd": v.get("sd"), "n": v.get("n")} if isinstance(v, dict) else v
                   for k, v in (row.get("metrics") or {}).items()}
        kept.append({"protocol": row.get("protocol"), "setting": row.get("setting"), "metrics": metrics})
    evaluation[task] = {"model": model, "rows": kept}
    write_atomic(folder / EVALUATION_FILE, json.dumps(evaluation, indent=2, default=str))
    write_model_card(folder)


def render_model_card(contract: dict[str, Any], *, evaluation: dict[str, Any] | None = None,
                      folder: str | Path | None = None) -> str:
    """The model card (Hugging Face front matter + markdown) of an export."""
    arch, method = contract.get("architecture", "?"), contract.get("method", "?")
    license_ = contract.get("license", DEFAULT_LICENSE)
    timm_ok = is_timm_architecture(str(arch))
    where = str(Path(folder).resolve()) if folder is not None else "path/to/export"
    size = contract.get("input_size") or []
    lines = ["---", f"license: {license_}", f"library_name: {'timm' if timm_ok else 'organfm'}",
             "pipeline_tag: image-feature-extraction", "tags:", "- organfm", "- medical-imaging", f"- {method}",
             "---", "", f"# {arch}, pretrained with organfm `{method}`", ""]
    lines += ["## Load", "", "```python"]
    if timm_ok:
        lines += ["import timm", f'model = timm.create_model("local-dir:{where}", pretrained=True)  '
                  "# (B, 1, H, W) -> (B, E)",
                  "cfg = timm.data.resolve_data_config(model=model)  # 1 channel, the size and mean/std below"]
    lines += ["import organfm", f'model, preprocess = organfm.load("{where}")  # preprocess: array or file -> tensor',
              "```", ""]
    lines += ["## Method", "", _method_summary(method) + ".", "",
              f"- steps: {contract.get('step', '?')}; exported network: {contract.get('network', '?')}",
              f"- features: {contract.get('num_features', '?')} per image (pooled)", ""]
    teachers = contract.get("teachers")
    if teachers:
        lines += ["Teachers distilled:", ""] + [f"- `{t}`" for t in teachers] + [""]
    lines += ["## Input contract", "",
              f"- input size (C, {'D, ' if len(size) == 4 else ''}H, W): {list(size)}, "
              f"interpolation {contract.get('interpolation', 'bilinear')}",
              f"- intensity: {(contract.get('intensity') or {}).get('mode', 'minmax')} to [0, 1], then "
              f"(x - {contract.get('mean')}) / {contract.get('std')}", ""]
    data = contract.get("training_data") or {}
    lines += ["## Training data", ""]
    if data:
        if data.get("procedural"):
            lines.append("- procedurally generated images (organfm's generators), no patient data")
        if "num_images" in data:
            lines.append(f"- {data['num_images']} images")
        organs = data.get("organs")
        if isinstance(organs, dict):
            lines.append("- organs: " + ", ".join(f"{k} ({v})" for k, v in organs.items()))
        elif organs:
            lines.append("- organs: " + ", ".join(organs))
        if data.get("splits"):
            lines.append("- splits: " + ", ".join(f"{k} {v}" for k, v in data["splits"].items()))
    else:
        lines.append(f"- organs: {', '.join(contract.get('organs') or []) or 'not recorded'}")
    lines += ["", "(counts only: no file name, path or patient identifier is recorded here)", ""]
    health = contract.get("health") or {}
    lines += ["## Training health", "", f"- verdict: **{health.get('verdict', 'not monitored')}**"
              + (f" at step {health['step']}" if health.get("step") is not None else ""),
              *([f"- {health['reason']}"] if health.get("reason") else []), ""]
    lines += ["## Evaluation", ""]
    if evaluation:
        for task, entry in evaluation.items():
            lines += [f"Task `{task}` (`organfm evaluate`, as model `{entry.get('model')}`):", "",
                      "| protocol | setting | metric | value |", "|---|---|---|---|"]
            for row in entry.get("rows", []):
                for name, m in (row.get("metrics") or {}).items():
                    value = m.get("mean") if isinstance(m, dict) else m
                    if not isinstance(value, (int, float)):
                        continue
                    sd = m.get("sd") if isinstance(m, dict) else None
                    text = f"{value:.4f}" + (f" ± {sd:.4f}" if isinstance(sd, (int, float)) and sd else "")
                    lines.append(f"| {row.get('protocol')} | {row.get('setting')} | {name} | {text} |")
            lines.append("")
    else:
        lines += ["Not evaluated yet: `organfm evaluate --models NAME=<this folder> --task mednist` adds the "
                  "results here.", ""]
    lines += ["## Intended use", "",
              "Research: a frozen or fine-tuned feature extractor for medical images of the organs above "
              "(kNN, linear probes, fine-tuning, segmentation). Not a medical device; not validated for "
              "diagnosis. Check the evaluation on your own data before relying on it.", "",
              "## Licence", "", f"`{license_}`: set it to the licence of the training data and of these weights "
              "before sharing (`organfm export RUN --license ...`).", ""]
    return "\n".join(lines)


def _link_or_copy(src: Path, dst: Path) -> None:
    """``dst`` holds ``src``'s bytes (a hard link where the file system allows, else a copy), atomically."""
    with atomic_path(dst) as tmp:
        tmp.unlink()  # a hard link needs a free name; the temporary's random name stays ours meanwhile
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None
