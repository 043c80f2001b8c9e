"""Pretraining methods: each composes a backbone, heads and losses (``create_method(name, ...)``).

Importing this package registers the built-in methods; ``organfm.registry.METHODS`` imports it on the first
lookup, so ``organfm.config`` can resolve ``method.*`` keys without importing any method itself.
"""
from organfm.methods.base import Method, StepOutput, StepState
from organfm.methods.registry import create_method, get_method, list_methods, register_method
from organfm.methods.teacher import EMATeacherMethod

from organfm.methods.imagetext import ImageText  # noqa: E402  (importing a method module registers it)
from organfm.methods.coda import Coda  # noqa: E402
from organfm.methods.dino import DINO  # noqa: E402
from organfm.methods.mmkd import MMKD  # noqa: E402
from organfm.methods.panfm import PanFM  # noqa: E402
from organfm.methods.rasd import RaSD  # noqa: E402
from organfm.methods.supcon import SupCon  # noqa: E402
from organfm.methods.triad import Triad  # noqa: E402

__all__ = ["DINO", "MMKD", "Coda", "EMATeacherMethod", "ImageText", "Method", "PanFM", "RaSD", "StepOutput",
           "StepState", "SupCon", "Triad", "create_method", "get_method", "list_methods", "register_method"]
