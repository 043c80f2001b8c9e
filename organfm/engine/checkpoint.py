"""Plain-dict checkpoints written atomically, resume from the latest, backbone export as safetensors."""
from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from organfm.outputs.atomic import write_atomic

if TYPE_CHECKING:
    from organfm.backbones.contract import BackboneContract

__all__ = ["CheckpointWriteError", "capture_rng", "export_backbone", "export_text", "latest_checkpoint",
           "load_checkpoint", "load_latest_readable", "read_export", "restore_rng", "save_checkpoint",
           "weights_metadata"]

CHECKPOINT_DIR = "checkpoints"
EXPORT_DIR = "export"
_STEP = re.compile(r"step-(\d+)\.ckpt$")
EXPORT_KEYS = ("step", "method", "export_prefix", "contract")  # what an export reads
RESUME_KEYS = EXPORT_KEYS + ("optimizer", "rng", "config")  # what a resumed run reads besides


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written (full disk, lost mount); the message says what is still intact."""


def save_checkpoint(state: dict[str, Any], run_dir: str | Path, step: int, *, keep: int = 2) -> Path:
    """Save ``state`` as ``run_dir/checkpoints/step-<step>.ckpt`` atomically; keep the newest ``keep``.

    Raises:
        CheckpointWriteError: the write failed (e.g. a full disk); older checkpoints are untouched.
    """
    folder = Path(run_dir) / CHECKPOINT_DIR
    path = folder / f"step-{step:08d}.ckpt"
    try:
        write_atomic(path, lambda f: torch.save(state, f))
    except (OSError, RuntimeError) as e:  # torch reports a full disk as RuntimeError from its stream writer
        previous = latest_checkpoint(run_dir)
        kept = (f"the previous checkpoint {previous} is intact; free space, then continue with "
                f"`organfm pretrain --resume {run_dir}`") if previous else "no earlier checkpoint exists"
        raise CheckpointWriteError(f"could not write checkpoint {path}: {e}; {kept}") from e
    for old in sorted(folder.glob("step-*.ckpt"))[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    return path


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint with the highest step in ``run_dir``, or None."""
    found = [(int(m.group(1)), p) for p in (Path(run_dir) / CHECKPOINT_DIR).glob("step-*.ckpt")
             if (m := _STEP.search(p.name))]
    return max(found)[1] if found else None


def load_checkpoint(path: str | Path, required: tuple[str, ...] = RESUME_KEYS) -> dict[str, Any]:
    """Load a plain-dict checkpoint with ``weights_only=True`` (no arbitrary code from pickles).

    Args:
        path: the checkpoint.
        required: keys the caller will read (``EXPORT_KEYS`` for an export).

    Raises:
        ValueError: the file is unreadable, not a dict, or lacks one of the keys a run needs.
    """
    import pickle

    from organfm.backbones.weights import refusal_reason

    if Path(path).is_file() and Path(path).stat().st_size == 0:
        raise ValueError(f"checkpoint {path} cannot be read: it is empty (0 bytes; a crash or a full disk while it "
                         "was written?): resume from an earlier checkpoint or delete it")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "unsupported global" not in str(e).lower():  # no object refused: a damaged or foreign file
            raise ValueError(f"checkpoint {path} cannot be read (not a torch checkpoint: {refusal_reason(e)})") from None
        # a refusal: never relay PyTorch's advice to load with weights_only=False
        raise ValueError(f"checkpoint {path} refused: it holds objects other than tensors and plain values "
                         f"({refusal_reason(e)}); organfm never unpickles arbitrary objects, because that can run "
                         "code. Use a checkpoint organfm wrote") from None
    except Exception as e:
        raise ValueError(f"checkpoint {path} cannot be read ({type(e).__name__}: {str(e) or 'no detail'})") from None
    missing = [k for k in required if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise ValueError(f"checkpoint {path} is not an organfm checkpoint: it lacks {', '.join(missing)}")
    return ckpt


def load_latest_readable(run_dir: str | Path, warn=None) -> tuple[Path, dict[str, Any]]:
    """The newest checkpoint of ``run_dir`` that loads, falling back past damaged ones (saying so via ``warn``).

    Raises:
        FileNotFoundError: no checkpoint at all. ValueError: none is readable.
    """
    found = sorted(((int(m.group(1)), p) for p in (Path(run_dir) / CHECKPOINT_DIR).glob("step-*.ckpt")
                    if (m := _STEP.search(p.name))), reverse=True)
    if not found:
        raise FileNotFoundError(f"cannot resume: no checkpoint in {Path(run_dir) / CHECKPOINT_DIR}")
    errors = []
    for _, path in found:
        try:
            ckpt = load_checkpoint(path)
        except ValueError as e:
            errors.append(str(e))
            continue
        if errors and warn is not None:
            warn(f"skipped {len(errors)} unreadable checkpoint(s), resuming from {path}: {errors[0]}")
        return path, ckpt
    raise ValueError(f"no readable checkpoint in {Path(run_dir) / CHECKPOINT_DIR}: {errors[0]}")


def capture_rng() -> dict[str, Any]:
    """Python, NumPy and torch RNG states in types that ``weights_only`` loading accepts."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached": float(cached)}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def export_backbone(run_dir: str | Path, *, checkpoint: str | Path | None = None,
                    out_dir: str | Path | None = None, network: str | None = None,
                    license: str | None = None, format: str | None = None) -> tuple[Path, Path]:
    """Write the run's exported backbone (Coda/DINO: the teacher's) as safetensors + its data contract.

    The folder is also a timm / Hugging Face model folder (``organfm.engine.model_folder``): for a timm
    architecture ``config.json`` + ``model.safetensors`` load with ``timm.create_model("local-dir:<out>",
    pretrained=True)`` and the right ``pretrained_cfg``; every export gets a ``README.md`` model card.

    Args:
        run_dir: the run folder.
        checkpoint: a specific checkpoint (default: the run's latest).
        out_dir: where to write (default: ``<run_dir>/export``).
        network: ``"teacher"`` or ``"student"``; default: the method's choice (the EMA teacher for Coda and
            DINO, as the paper transfers it; the student for SupCon and RaSD, which have no teacher).
        license: the licence named in the model card and ``config.json`` (default: the previous export's, else
            ``other``).
        format: also write the encoder for another framework (``organfm.interop``): ``"nnunet"`` (plainconv3d:
            an nnU-Net v2 ``-pretrained_weights`` checkpoint + the plans' architecture block) or ``"monai"``
            (swin3d: MONAI ``SwinUNETR(use_v2=True).swinViT`` state dict + its arguments). A backbone the
            format cannot hold is refused before anything is written.

    Returns:
        (weights path, contract JSON path); a format's files are ``organfm.interop.FORMAT_FILES[format]`` in
        the same folder.
    """
    from safetensors.torch import save

    from organfm.backbones.contract import CONTRACT_FILE

    run_dir = Path(run_dir)
    weights, contract, state = read_export(run_dir, checkpoint=checkpoint, network=network)
    if format is not None:  # refuse a backbone the format cannot hold before any file is written
        from organfm.interop import check_export_format

        check_export_format(format, weights, contract.to_dict())
    from organfm.monitor import read_health

    health = read_health(run_dir)
    if health is not None:  # what the monitor said of the exported network (the run's latest measurement)
        contract.health = {k: health.get(k) for k in ("verdict", "reason", "step")}
    out = Path(out_dir) if out_dir else run_dir / EXPORT_DIR
    contract.training_data = _training_data(run_dir)
    contract.license = license or _previous_license(out / CONTRACT_FILE)
    text, contract.text = contract.text, None
    if text is not None:  # a network trained with texts: its text side goes to export/text/
        export_text(text, state, f"{contract.network}.text.", run_dir, out)
    weights_path, contract_path = out / "backbone.safetensors", out / CONTRACT_FILE
    out.mkdir(parents=True, exist_ok=True)
    # serialised in memory, as load_encoder does for a run folder: the same bytes, so the same model hash
    # (safetensors' file writer orders the metadata keys differently from its in-memory one)
    write_atomic(weights_path, save(weights, metadata=weights_metadata(contract)))
    write_atomic(contract_path, contract.to_json())
    from organfm.engine.model_folder import write_model_folder

    write_model_folder(out, contract.to_dict(), weights_path)
    from organfm.interop import remove_stale_formats, save_export_format

    remove_stale_formats(out, keep=format)
    if format is not None:
        save_export_format(format, out, weights, contract.to_dict())
    return weights_path, contract_path


def read_export(run_dir: str | Path, *, checkpoint: str | Path | None = None, network: str | None = None
                ) -> tuple[dict[str, torch.Tensor], BackboneContract, dict[str, torch.Tensor]]:
    """The exported network's weights and contract, read from a checkpoint into memory (nothing is written).

    Args:
        run_dir: the run folder.
        checkpoint: a specific checkpoint (default: the run's latest).
        network: ``"teacher"`` or ``"student"``; default: the method's choice (see :func:`export_backbone`).

    Returns:
        ``(weights, contract, state)``: the backbone's state dict in the exported module's naming; its contract
        with ``step``, ``network`` and (from the run's config) ``teachers`` set (``text``, when set, describes
        the text side); and the checkpoint's whole method state, where that text side lives
        (:func:`export_text`).

    Raises:
        FileNotFoundError: no checkpoint. ValueError: an unreadable checkpoint, or no parameters of ``network``.
    """
    from organfm.backbones.contract import BackboneContract

    run_dir = Path(run_dir)
    ckpt_path = Path(checkpoint) if checkpoint else latest_checkpoint(run_dir)
    if ckpt_path is None:
        raise FileNotFoundError(f"no checkpoint in {run_dir / CHECKPOINT_DIR}: nothing to export")
    ckpt = load_checkpoint(ckpt_path, required=EXPORT_KEYS)
    if network not in (None, "teacher", "student"):
        raise ValueError(f"network must be 'teacher' or 'student', got {network!r}")
    prefix = ckpt["export_prefix"] if network is None else f"{network}.{ckpt['export_prefix'].split('.', 1)[1]}"
    weights = {k[len(prefix):]: v.contiguous() for k, v in ckpt["method"].items() if k.startswith(prefix)}
    if not weights:
        raise ValueError(f"{ckpt_path} holds no parameters under {prefix!r}"
                         + (f" (this method has no {network})" if network else ""))
    contract = BackboneContract.from_dict(ckpt["contract"]).replace(step=ckpt["step"],
                                                                    network=prefix.split(".", 1)[0])
    teachers = ((ckpt.get("config") or {}).get("method") or {}).get("teachers")
    if teachers:  # a distilled student names what it learned from
        contract.teachers = list(teachers)
    return weights, contract, ckpt["method"]


def weights_metadata(contract: BackboneContract) -> dict[str, str]:
    """The safetensors metadata of exported weights: the architecture, and the arguments that rebuild it."""
    metadata = {"architecture": contract.architecture, "format": "pt"}
    if contract.backbone_args:  # organfm's own backbones rebuild themselves from it
        metadata["backbone_args"] = json.dumps(contract.backbone_args, sort_keys=True)
    return metadata


def _training_data(run_dir: Path) -> dict[str, Any]:
    """The run's data summary (``data.json``) in counts only, for the contract and the model card."""
    from organfm.engine.model_folder import data_facts

    try:
        summary = json.loads((run_dir / "data.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data_facts(summary if isinstance(summary, dict) else None)


def _previous_license(contract_path: Path) -> str:
    try:
        return str(json.loads(contract_path.read_text(encoding="utf-8")).get("license") or "other")
    except (OSError, ValueError, AttributeError):
        return "other"


def export_text(description: dict, state: dict, prefix: str, run_dir: Path, out: Path) -> None:
    """Write the text side under ``prefix`` of a checkpoint's state to ``out/text/`` (tower files from the run).

    Args:
        description: the contract's ``text`` (the tower's description).
        state: the checkpoint's method state.
        prefix: where the text side's parameters live in ``state`` (``<network>.text.``).
        run_dir: the run folder (its ``text/`` holds the tokenizer).
        out: the export folder.
    """
    from organfm.text.tower import TEXT_DIR, JointText, save_joint_text

    weights = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not weights:
        raise ValueError(f"the checkpoint describes a text tower but holds no parameters under {prefix!r}")
    joint = JointText.from_description(description, run_dir / TEXT_DIR)  # the run's tokenizer lives there
    joint.load_state_dict(weights)
    save_joint_text(joint, out / TEXT_DIR)
