"""Models: experts, adapters, exchanges, heads, the composed model and its presets."""

from .attention import set_attention_backend
from .config import ExchangeSpec, ModelConfig
from .multiexpert import MultiExpertModel
from .registry import build_model, get_config, list_models

__all__ = [
    "ExchangeSpec",
    "ModelConfig",
    "MultiExpertModel",
    "build_model",
    "get_config",
    "list_models",
    "set_attention_backend",
]
