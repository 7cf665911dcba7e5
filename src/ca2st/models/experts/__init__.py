"""Frozen experts, one per module."""

from .ast import ASTExpert
from .base import Expert, ExpertBlock
from .clip import CLIPExpert
from .videomae import VideoMAEExpert

__all__ = ["Expert", "ExpertBlock", "ASTExpert", "CLIPExpert", "VideoMAEExpert"]
