"""Pretraining methods: each composes a backbone, heads and losses (``create_method(name, ...)``)."""
from organfm.methods.base import Method, StepOutput
from organfm.methods.coda import Coda, CodaConfig
from organfm.methods.dino import DINO, DINOConfig
from organfm.methods.rasd import RaSD, RaSDConfig
from organfm.methods.registry import create_method, list_methods, register_method
from organfm.methods.supcon import SupCon, SupConConfig

__all__ = ["DINO", "DINOConfig", "Coda", "CodaConfig", "Method", "RaSD", "RaSDConfig", "StepOutput", "SupCon",
           "SupConConfig", "create_method", "list_methods", "register_method"]
