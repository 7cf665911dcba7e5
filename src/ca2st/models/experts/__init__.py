"""Frozen experts, one per module; :mod:`.archs` lists them by architecture name."""

from .ast import ASTExpert
from .base import Expert, ExpertBlock
from .clip import CLIPExpert
from .dinov2 import DINOv2Expert
from .siglip2 import SigLIP2Expert
from .videomae import VideoMAEExpert
from .videomae2 import VideoMAE2Expert

__all__ = [
    "Expert",
    "ExpertBlock",
    "ASTExpert",
    "CLIPExpert",
    "DINOv2Expert",
    "SigLIP2Expert",
    "VideoMAEExpert",
    "VideoMAE2Expert",
]
