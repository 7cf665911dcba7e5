"""ca2st: CAST, CAVA and CA²ST for holistic video recognition in PyTorch.

The public names are imported on first use (PEP 562), so that ``import ca2st`` and ``ca2st --help``
load neither torch's models nor plotting or logging libraries.
"""

import importlib

from . import errors

__version__ = "0.1.0"

# public name -> "module:attribute" it is imported from on first access
_EXPORTS = {
    "build_model": "ca2st.models:build_model",
    "list_models": "ca2st.models:list_models",
    "load_official_cast": "ca2st.checkpoints:load_official_cast",
    "load_expert_weights": "ca2st.checkpoints:load_expert_weights",
    "load_any": "ca2st.checkpoints:load_any",
    "load_model": "ca2st.checkpoints:load_model",
    "save_model": "ca2st.checkpoints:save_model",
    "from_pretrained": "ca2st.checkpoints.pretrained:from_pretrained",
    "load_config": "ca2st.engine.config:load_config",
    "build_dataset": "ca2st.engine.data:build_dataset",
    "read_frames": "ca2st.data.decode:read_frames",
    "read_audio": "ca2st.data.decode:read_audio",
    "log_mel": "ca2st.data.audio:log_mel",
    "predict": "ca2st.prediction:predict",
    "explain": "ca2st.explanation:explain",
    "extract_features": "ca2st.extraction:extract_features",
    "export_model": "ca2st.export:export_model",
}

__all__ = [*_EXPORTS, "errors", "__version__"]


def __getattr__(name: str):
    target = _EXPORTS.get(name)
    if target is None:
        raise AttributeError(f"module 'ca2st' has no attribute {name!r}")
    module_name, _, attribute = target.partition(":")
    module = importlib.import_module(module_name)
    try:
        value = getattr(module, attribute)
    except AttributeError:
        raise AttributeError(f"module 'ca2st' has no attribute {name!r} ({module_name} has no {attribute})") from None
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
