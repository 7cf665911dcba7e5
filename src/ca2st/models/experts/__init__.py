"""Frozen experts, one per module."""

from .base import Expert, ExpertBlock
from .clip import CLIPExpert
from .videomae import VideoMAEExpert

__all__ = ["Expert", "ExpertBlock", "CLIPExpert", "VideoMAEExpert"]
