"""See inside a model: B-CA attention maps and expert attention rollout from its own forward pass
(:func:`explain`), with pictures and a tensor file (:meth:`Explanation.save`)."""

from .record import AttentionMap, AttentionRecorder, direction_names
from .result import Explanation
from .run import explain

__all__ = ["explain", "Explanation", "AttentionMap", "AttentionRecorder", "direction_names"]
