"""ca2st: CAST, CAVA and CA²ST for holistic video recognition in PyTorch."""

from . import errors
from .checkpoints import load_expert_weights, load_official_cast
from .models import build_model, list_models

__version__ = "0.1.0"

__all__ = ["build_model", "list_models", "load_official_cast", "load_expert_weights", "errors", "__version__"]
