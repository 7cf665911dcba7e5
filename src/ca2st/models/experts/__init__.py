"""Frozen experts, one per module."""

from .ast import ASTExpert
from .base import Expert, ExpertBlock
from .clip import CLIPExpert
from .dinov2 import DINOv2Expert
from .videomae import VideoMAEExpert

__all__ = ["Expert", "ExpertBlock", "ASTExpert", "CLIPExpert", "DINOv2Expert", "VideoMAEExpert"]
