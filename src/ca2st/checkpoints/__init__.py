"""Checkpoint formats: our own (``ca2st.py``), one module per external layout, shared reading and strict loading."""

from .ca2st import load_any, load_model, save_model
from .experts import load_expert_weights
from .io import read_state_dict
from .official_cast import load_official_cast, to_official_state_dict

__all__ = [
    "load_any",
    "load_model",
    "save_model",
    "load_expert_weights",
    "load_official_cast",
    "read_state_dict",
    "to_official_state_dict",
]
