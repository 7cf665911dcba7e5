"""Temporal expert: VideoMAE V2 ViT-B (e.g. the Kinetics-710 model distilled from ViT-g), and its weight layouts.

VideoMAE V2's ``vit_base_patch16_224`` (``models/modeling_finetune.py`` of OpenGVLab/VideoMAEv2, as its fine-tuning
and distillation scripts build it) is VideoMAE's ViT-B layer for layer: a 2×16×16 tubelet Conv3d, the fixed
sine-cosine table, q/v biases, LayerNorm eps 1e-6, no layer scale (``init_values=0``), scaled dot-product attention
(``cos_attn=False``) and ``fc_norm`` of the token mean. :class:`VideoMAE2Expert` is therefore
:class:`~ca2st.models.experts.videomae.VideoMAEExpert` under its own name, licence and weight formats.

Weight layouts:

* the original repository's (``vit_b_k710_dl_from_giant.pth``: ``{'module': sd}`` with ``patch_embed.proj``,
  ``blocks.{i}``, ``fc_norm`` and a 710-class ``head``) has VideoMAE's fine-tuned key names exactly. No key tells
  the two apart, so such a file is read by VideoMAE's reader (format ``VideoMAE``), which accepts this expert as
  well: the model's ``temporal_arch`` decides which expert the weights go into, not the file.
* the Hub's remote-code models (``OpenGVLab/VideoMAEv2-Base``, loaded with ``trust_remote_code``) wrap the same
  VisionTransformer as ``model``: ``model.patch_embed.proj.*``, ``model.blocks.{i}.*``, ``model.fc_norm.*``, no
  head. This prefix is V2's alone (:data:`HUB_FORMAT`): such files load into this expert only.
"""

from __future__ import annotations

from . import videomae
from .building import WeightFormat
from .videomae import VideoMAEExpert

HUB_PREFIX = "model."


class VideoMAE2Expert(VideoMAEExpert):
    """VideoMAE V2 ViT: the :class:`VideoMAEExpert` computation. Stream ``(B, T, N, D)``, ``T = frames /
    tubelet``, no special tokens; the pooled feature is ``fc_norm`` (the final, trainable ``norm``) of the mean over
    all tokens, as V2's ``use_mean_pooling``. The sine-cosine table is rebuilt for the model's own frame count and
    image size, as VideoMAE V2 does; a learned table from a checkpoint is resized trilinearly.

    Weights are trained on ImageNet-normalised RGB (VideoMAE V2's data pipeline), the statistics of the official
    presets.
    """

    weights_license = "MIT (VideoMAE V2 code and distilled weights); CC-BY-NC-4.0 (Hub OpenGVLab/VideoMAEv2-*)"


def build(cfg, drop_path_rates: list[float]) -> VideoMAE2Expert:
    """The temporal expert of a model config (``temporal_arch="videomae2"``)."""
    return videomae.build(cfg, drop_path_rates, VideoMAE2Expert)


def is_hub_layout(sd: dict) -> bool:
    """A state dict of the Hub's remote-code ``VideoMAEv2`` model: a tubelet (Conv3d) embedding under ``model.``
    (an image ViT wrapped as ``model`` has a Conv2d one)."""
    weight = sd.get(HUB_PREFIX + "patch_embed.proj.weight")
    return weight is not None and weight.dim() == 5


def convert_hub_layout(sd: dict) -> tuple[dict, list[str]]:
    """The expert's tensors and the keys that fit none: ``model.`` is dropped, the rest are VideoMAE's names."""
    # the checkpoints package imports the expert registry, which imports this module: import it when first used
    from ...checkpoints.videomae import convert

    inner = {k[len(HUB_PREFIX) :]: v for k, v in sd.items() if k.startswith(HUB_PREFIX)}
    out, unexpected = convert(inner)
    return out, [HUB_PREFIX + k for k in unexpected] + [k for k in sd if not k.startswith(HUB_PREFIX)]


HUB_FORMAT = WeightFormat("Hugging Face VideoMAE V2 (remote code)", is_hub_layout, convert_hub_layout)
