"""ca2st: CAST, CAVA and CA²ST for holistic video recognition in PyTorch."""

from . import errors
from .checkpoints import load_expert_weights, load_official_cast
from .data.audio import log_mel
from .data.decode import read_audio, read_frames
from .engine.config import load_config
from .engine.data import build_dataset
from .checkpoints import load_any, load_model, save_model
from .models import build_model, list_models
from .prediction import predict

__version__ = "0.1.0"

__all__ = ["build_model", "list_models", "load_official_cast", "load_expert_weights", "load_model", "save_model",
           "read_frames", "read_audio", "log_mel", "predict", "errors", "__version__"]
