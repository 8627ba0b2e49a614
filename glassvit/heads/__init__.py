"""Interpretable heads, one file each, registered by name (see base.py for the contract)."""

from . import concept, exvit, linear, neural_tree, rcut
from .base import HEADS, Head, build_head, head_arguments, register_head

__all__ = ["HEADS", "Head", "build_head", "head_arguments", "register_head", "concept", "exvit", "linear", "neural_tree", "rcut"]
