"""Weights files: read them without running code, and load them strictly into a backbone.

``organfm export`` writes ``backbone_args`` (JSON) into the safetensors metadata, so
``create_backbone(name, pretrained_file=path)`` rebuilds the exported architecture without being told
its spatial dims or widths again.

Loading is strict by default: a missing or unexpected tensor, or one of another shape, is an error
naming the file, the architecture and the first offending keys. (timm's own pretrained path drops
the classifier and then loads non-strictly, which turned weights of another architecture into a
silently random model.) ``strict=False`` is the documented opt-in for partial loading: it loads
every tensor whose name and shape fit and reports, as a warning, what was and was not loaded.

Pickle files are read with ``torch.load(weights_only=True)``: a file that holds anything but
tensors and plain containers is refused, never unpickled, because unpickling can run code.
"""
from __future__ import annotations

import json
import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["BACKBONE_ARGS_KEY", "LoadReport", "load_backbone_weights", "load_state_dict_checked",
           "read_backbone_args", "read_state_dict", "resolve_backbone_args"]

BACKBONE_ARGS_KEY = "backbone_args"
_SHOWN = 5  # offending keys named in an error: enough to recognise the architecture, short enough to read


@dataclass
class LoadReport:
    """What a weights file gave a model.

    Attributes:
        loaded: model keys set from the file.
        missing: model keys the file lacks (left at their initialisation).
        unexpected: file keys the model has no place for (ignored).
        mismatched: ``(key, file shape, model shape)`` for tensors of another shape (ignored).
    """

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Whether every model tensor came from the file and every file tensor was used."""
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self) -> str:
        """One line: counts, then the first few keys of each kind of problem."""
        parts = [f"{len(self.loaded)} tensors loaded"]
        if self.missing:
            parts.append(f"{len(self.missing)} missing from the file ({_first(self.missing)})")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected ({_first(self.unexpected)})")
        if self.mismatched:
            shown = ", ".join(f"{k}: file {tuple(a)} vs model {tuple(b)}" for k, a, b in self.mismatched[:_SHOWN])
            more = f", ... {len(self.mismatched) - _SHOWN} more" if len(self.mismatched) > _SHOWN else ""
            parts.append(f"{len(self.mismatched)} of another shape ({shown}{more})")
        return "; ".join(parts)


def read_backbone_args(path: str | Path) -> dict[str, Any]:
    """The constructor arguments stored in a weights file's metadata (empty if none, or not safetensors).

    Args:
        path: ``.safetensors`` (or ``.pth``/``.pt``, which hold no metadata).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"backbone weights {path} do not exist")
    if path.suffix != ".safetensors":
        return {}
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        return json.loads(meta[BACKBONE_ARGS_KEY]) if BACKBONE_ARGS_KEY in meta else {}
    except Exception as e:  # safetensors raises its own SafetensorError on a damaged header
        raise ValueError(f"{path}: cannot read safetensors metadata ({type(e).__name__}: {e})") from None


def resolve_backbone_args(given: dict[str, Any], defaults: dict[str, Any], pretrained_file: str | None) -> dict[str, Any]:
    """Architecture arguments: the explicit ones, else the weights file's, else the defaults.

    Args:
        given: Arguments the caller passed; ``None`` means "not given".
        defaults: Built-in defaults for every architecture argument.
        pretrained_file: Weights whose metadata may hold stored arguments.

    Returns:
        One value per key of ``defaults``; sequences become tuples.
    """
    stored = read_backbone_args(pretrained_file) if pretrained_file else {}
    out = {}
    for key, default in defaults.items():
        value = given.get(key)
        value = stored.get(key, default) if value is None else value
        out[key] = tuple(value) if isinstance(value, list) else value
    return out


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file or a ``torch.save``-d state dict, without running code.

    A checkpoint that wraps its state dict under ``state_dict``, ``model`` or ``state_dict_ema`` is
    unwrapped (the layouts timm reads too).

    Raises:
        FileNotFoundError: no such file.
        ValueError: damaged file, a pickle that is not plain tensors (refused, with why), or no tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"backbone weights {path} do not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:  # SafetensorError, OSError: a damaged or truncated file
            raise ValueError(f"{path}: cannot read safetensors weights ({type(e).__name__}: {e})") from None
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: empty file (0 bytes; an interrupted copy or save?): copy or export the weights again")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        why = refusal_reason(e)
        raise ValueError(
            f"{path}: refused: this pickle holds objects other than tensors ({why.strip()[:200]}); organfm loads "
            "weights with torch.load(weights_only=True) and never unpickles arbitrary objects, because unpickling "
            "can run code. Re-save it as a plain state dict (torch.save(model.state_dict(), ...)) or as .safetensors"
        ) from None
    except Exception as e:  # not a torch file at all, truncated zip, ...
        raise ValueError(f"{path}: cannot read weights ({type(e).__name__}: {str(e) or 'no detail'})") from None
    for wrapper in ("state_dict", "model", "state_dict_ema"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
            break
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: not a state dict (expected a dict of tensor name -> tensor, got "
                         f"{type(state).__name__})")
    return state


def load_state_dict_checked(model: nn.Module, state: dict[str, torch.Tensor], *, path: str | Path,
                            architecture: str, strict: bool = True) -> LoadReport:
    """Load ``state`` into ``model``: all of it (``strict``) or every tensor that fits (reported).

    Args:
        model: the network to fill.
        state: tensor name -> tensor, already in ``model``'s naming.
        path: the weights file (for messages).
        architecture: the model's architecture name (for messages).
        strict: raise on any missing, unexpected or reshaped tensor; ``False`` loads what fits and
            warns with the :class:`LoadReport`.

    Returns:
        What was loaded and what was not.

    Raises:
        ValueError: ``strict`` and the file does not fit (names the file, architecture and first keys).
    """
    own = model.state_dict()
    report = LoadReport()
    fitting = {}
    for key, tensor in state.items():
        if key not in own:
            report.unexpected.append(key)
        elif tuple(tensor.shape) != tuple(own[key].shape):
            report.mismatched.append((key, tuple(tensor.shape), tuple(own[key].shape)))
        else:
            fitting[key] = tensor
            report.loaded.append(key)
    report.missing = [key for key in own if key not in state]
    if not report.complete and strict:
        raise ValueError(f"{path} does not fit architecture {architecture!r}: {report.describe()}. Use weights "
                         "of this architecture, or opt in to partial loading (backbone.strict_load=false)")
    if not fitting:
        raise ValueError(f"{path}: no tensor fits architecture {architecture!r} ({report.describe()})")
    model.load_state_dict(fitting, strict=False)
    if not report.complete:
        warnings.warn(f"partial load of {path} into {architecture!r}: {report.describe()}", stacklevel=3)
    return report


def load_backbone_weights(model: nn.Module, path: str | Path, *, architecture: str | None = None,
                          strict: bool = True) -> LoadReport:
    """Load a state dict saved by ``organfm export`` (or ``torch.save``) into ``model``, strictly by default.

    Raises:
        ValueError: The file's tensors do not fit the architecture (names or shapes), or it is refused.
    """
    return load_state_dict_checked(model, read_state_dict(path), path=path, strict=strict,
                                   architecture=architecture or type(model).__name__)


def _first(keys: list[str]) -> str:
    more = f", ... {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else ""
    return ", ".join(keys[:_SHOWN]) + more


def refusal_reason(error: Exception) -> str:
    """The line of a ``weights_only`` refusal that says what was refused, without PyTorch's advice.

    PyTorch's message suggests re-running with ``weights_only=False``, which would run the pickle's code:
    organfm never relays that.
    """
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    lines = [line for line in lines if "weights_only" not in line and "re-running" not in line.lower()
             and "torch.serialization" not in line and "add_safe_globals" not in line]
    why = next((line for line in lines if "Unsupported" in line or "global" in line.lower()), lines[-1] if lines else "")
    why = why.split("WeightsUnpickler error:")[-1].strip()
    return why[:200] or "an object that is not a tensor"
