"""Checkpoint formats: one module per external layout, plus shared reading and strict loading."""

from .experts import load_expert_weights
from .io import read_state_dict
from .official_cast import load_official_cast, to_official_state_dict

__all__ = ["load_expert_weights", "load_official_cast", "read_state_dict", "to_official_state_dict"]
