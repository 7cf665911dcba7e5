"""Spatial expert: the SigLIP 2 ViT image tower applied to every other frame, and its two weight layouts."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..attention import attention
from ..layers import Mlp
from .base import Expert, ExpertBlock, block_stack
from .building import WeightFormat, common_options, frame_options, spatial_patch

StateDict = dict[str, torch.Tensor]
SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)
POOLINGS = ("map", "mean")


class GELUTanh(nn.GELU):
    """GELU with the tanh approximation (SigLIP's ``gelu_pytorch_tanh``)."""

    def __init__(self):
        super().__init__(approximate="tanh")


class AttentionPoolingHead(nn.Module):
    """SigLIP's multihead attention pooling (MAP): one learned probe attends over the tokens of an image, then a
    residual MLP on its layer-normalised output. ``qkv`` and ``proj`` hold ``nn.MultiheadAttention``'s input and
    output projections."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, norm_eps: float):
        super().__init__()
        self.num_heads = num_heads
        self.probe = nn.Parameter(torch.randn(1, 1, dim) * dim**-0.5)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), GELUTanh)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, N, D)`` tokens -> ``(B, D)``."""
        B, N, D = x.shape
        h = self.num_heads
        weight, bias = self.qkv.weight, self.qkv.bias
        q = F.linear(self.probe.expand(B, 1, D), weight[:D], bias[:D]).view(B, 1, h, D // h).transpose(1, 2)
        k, v = F.linear(x, weight[D:], bias[D:]).view(B, N, 2, h, D // h).permute(2, 0, 3, 1, 4).unbind(0)
        out = self.proj(attention(q, k, v).transpose(1, 2).reshape(B, 1, D))
        return (out + self.mlp(self.norm(out)))[:, 0]


class SigLIP2Expert(Expert):
    """SigLIP 2 ViT image encoder over frames ``frame_offset, frame_offset + frame_stride, ...``.

    Patch conv with bias, ``N`` learned positions (no class token), pre-LN blocks with tanh-GELU MLPs
    (LayerNorm eps 1e-6), per-frame self-attention; ``norm`` is SigLIP's ``post_layernorm`` (trained with the
    adapters). The stream has one slot per selected frame: ``(B, T, N, D)``. Pooled feature, by ``pooling``:

    * ``'map'``: SigLIP's attention-pooling head (frozen, never trained) on each frame's normalised tokens,
      averaged over frames — the image embedding SigLIP was trained with;
    * ``'mean'``: the mean of the normalised tokens over all frames and positions.

    The head is part of the expert with either pooling, so the same weight files load into both.

    Position table: ``N`` rows, a square raster grid, resized at load time to the model's grid bilinearly with
    antialiasing (``align_corners=False``), the rule SigLIP 2's NaFlex variant applies to its 16×16 table at every
    resolution. A fixed-resolution checkpoint used at its own resolution (224 px: 14×14) is not resized.
    """

    modality = "video"
    num_special = 0
    per_slot_attention = True
    mean, std = SIGLIP_MEAN, SIGLIP_STD
    weights_license = "Apache-2.0 (Google SigLIP 2)"

    def __init__(
        self,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        img_size: int = 224,
        patch_size: int = 16,
        num_frames: int = 16,
        frame_stride: int = 2,
        frame_offset: int = 1,
        adapter_ratio: float = 0.25,
        drop_path_rates: list[float] | None = None,
        pooling: str = "map",
    ):
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not a multiple of patch_size {patch_size}")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {list(POOLINGS)}, got {pooling!r}")
        side = img_size // patch_size
        self.patch_size, self.pooling = patch_size, pooling
        self.frame_stride, self.frame_offset = frame_stride, frame_offset
        self.grid = (len(range(frame_offset, num_frames, frame_stride)), side * side)
        self.patch_embed = nn.Conv2d(3, embed_dim, patch_size, patch_size)
        self.pos_embed = nn.Parameter(torch.randn(side * side, embed_dim) * embed_dim**-0.5)
        self.blocks = block_stack(
            depth,
            drop_path_rates,
            lambda dp: ExpertBlock(embed_dim, num_heads, mlp_ratio, GELUTanh, 1e-6, "full", adapter_ratio, dp),
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = AttentionPoolingHead(embed_dim, num_heads, mlp_ratio, 1e-6)

    def embed(self, video: torch.Tensor) -> torch.Tensor:
        images, B, T = self.frame_images(video)
        x = self.patch_embed(images).flatten(2).transpose(1, 2)
        x = x + self.pos_embed.to(x.dtype)
        return x.view(B, T, x.shape[1], x.shape[2])

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.norm(x)
        if self.pooling == "mean":
            return tokens.mean(dim=(1, 2))
        B, T, N, D = tokens.shape
        return self.head(tokens.reshape(B * T, N, D)).view(B, T, D).mean(dim=1)

    def pos_tables(self):
        return {"pos_embed": ("space:bilinear,antialias", (self.grid[1],))}


# ---------------------------------------------------------------------------------------------- weight layouts

# transformers' names -> the expert's (rules of ca2st.checkpoints.io.Renamer), beside the CLIP-style encoder's
# (ca2st.checkpoints.hf.CLIP_ENCODER_RULES)
SIGLIP_RULES = (
    ("embeddings.patch_embedding.", "patch_embed."),
    ("embeddings.position_embedding.weight", "pos_embed"),
    ("post_layernorm.", "norm."),
    ("head.probe", "head.probe"),
    ("head.attention.in_proj_weight", "head.qkv.weight"),
    ("head.attention.in_proj_bias", "head.qkv.bias"),
    ("head.attention.out_proj.", "head.proj."),
    ("head.layernorm.", "head.norm."),
    ("head.mlp.fc1.", "head.mlp.fc1."),
    ("head.mlp.fc2.", "head.mlp.fc2."),
)
# the text tower and the contrastive scale/bias of SiglipModel/Siglip2Model, a classifier head, index buffers
SIGLIP_IGNORED = ("text_model.", "logit_scale", "logit_bias", "classifier.", "embeddings.position_ids")
PATCH_WEIGHT = "embeddings.patch_embedding.weight"


def _vision_keys(sd: StateDict) -> StateDict:
    return {k[len("vision_model.") :] if k.startswith("vision_model.") else k: v for k, v in sd.items()}


def _patch_weight(sd: StateDict) -> torch.Tensor | None:
    return next((v for k, v in _vision_keys(sd).items() if k == PATCH_WEIGHT), None)


def is_hf_siglip(sd: StateDict) -> bool:
    """transformers' SiglipVisionModel / SiglipModel (the fixed-resolution SigLIP and SigLIP 2 checkpoints):
    a convolutional patch embedding and no class embedding."""
    weight = _patch_weight(sd)
    return weight is not None and weight.dim() == 4 and not any(k.endswith("class_embedding") for k in sd)


def is_hf_siglip2_naflex(sd: StateDict) -> bool:
    """transformers' Siglip2VisionModel / Siglip2Model (NaFlex): a linear embedding of flattened patches."""
    weight = _patch_weight(sd)
    return weight is not None and weight.dim() == 2


def naflex_patch_to_conv(weight: torch.Tensor, channels: int = 3) -> torch.Tensor:
    """NaFlex's ``(D, P·P·C)`` patch Linear as a ``(D, C, P, P)`` conv weight. Its patches are flattened
    row-major over (row in patch, column in patch, channel), as ``Siglip2ImageProcessor`` does."""
    dim, size = weight.shape
    patch = math.isqrt(size // channels)
    return weight.reshape(dim, patch, patch, channels).permute(0, 3, 1, 2).contiguous()


def convert_hf_siglip(sd: StateDict) -> tuple[StateDict, list[str]]:
    """Either transformers layout to the expert's names; the NaFlex patch Linear becomes the conv weight."""
    from ...checkpoints.hf import CLIP_ENCODER_RULES, fuse_clip_qkv  # the checkpoints package imports the experts
    from ...checkpoints.io import Renamer

    sd = _vision_keys(sd)
    if PATCH_WEIGHT in sd and sd[PATCH_WEIGHT].dim() == 2:
        sd[PATCH_WEIGHT] = naflex_patch_to_conv(sd[PATCH_WEIGHT])
    out, unmatched = Renamer((*SIGLIP_RULES, *CLIP_ENCODER_RULES)).convert(fuse_clip_qkv(sd))
    return out, [k for k in unmatched if not k.startswith(SIGLIP_IGNORED)]


# timm's VisionTransformer (``vit_base_patch16_siglip_224`` and its SigLIP 2 weights, e.g. the Hub's
# ``timm/ViT-B-16-SigLIP2``), bare or as open_clip's ``visual.trunk``; the attention pool's q and kv are fused first
TIMM_PREFIXES = ("visual.trunk.",)
TIMM_RULES = (
    ("patch_embed.proj.", "patch_embed."),
    ("pos_embed", "pos_embed"),
    ("blocks.{i}.norm1.", "blocks.{i}.norm1."),
    ("blocks.{i}.attn.qkv.", "blocks.{i}.attn.qkv."),
    ("blocks.{i}.attn.proj.", "blocks.{i}.attn.proj."),
    ("blocks.{i}.norm2.", "blocks.{i}.norm2."),
    ("blocks.{i}.mlp.fc1.", "blocks.{i}.mlp.fc1."),
    ("blocks.{i}.mlp.fc2.", "blocks.{i}.mlp.fc2."),
    ("norm.", "norm."),
    ("attn_pool.latent", "head.probe"),
    ("attn_pool.qkv.", "head.qkv."),
    ("attn_pool.proj.", "head.proj."),
    ("attn_pool.norm.", "head.norm."),
    ("attn_pool.mlp.fc1.", "head.mlp.fc1."),
    ("attn_pool.mlp.fc2.", "head.mlp.fc2."),
)
# open_clip's text tower and contrastive scale/bias; a timm classifier
TIMM_IGNORED = ("text.", "logit_scale", "logit_bias", "head.")


def _timm_keys(sd: StateDict) -> StateDict:
    from ...checkpoints.io import strip_prefixes  # the checkpoints package imports the expert registry

    return strip_prefixes(sd, TIMM_PREFIXES)


def is_timm_siglip(sd: StateDict) -> bool:
    """timm's / open_clip's SigLIP ViT: a patch conv, an attention pool and no class token."""
    keys = _timm_keys(sd)
    return "patch_embed.proj.weight" in keys and "attn_pool.latent" in keys and "cls_token" not in keys


def convert_timm_siglip(sd: StateDict) -> tuple[StateDict, list[str]]:
    """timm's names to the expert's: the position table loses its batch axis, the pool's q and kv become one."""
    from ...checkpoints.io import Renamer  # the checkpoints package imports the expert registry

    sd = _timm_keys(sd)
    if "pos_embed" in sd:
        sd["pos_embed"] = sd["pos_embed"].reshape(-1, sd["pos_embed"].shape[-1])
    for kind in ("weight", "bias"):
        q, kv = f"attn_pool.q.{kind}", f"attn_pool.kv.{kind}"
        if q in sd and kv in sd:
            sd[f"attn_pool.qkv.{kind}"] = torch.cat((sd.pop(q), sd.pop(kv)))
    out, unmatched = Renamer(TIMM_RULES).convert(sd)
    return out, [k for k in unmatched if not k.startswith(TIMM_IGNORED)]


def builder(pooling: str):
    """The spatial expert of a model config, pooled by ``pooling``."""

    def build(cfg, drop_path_rates: list[float]) -> SigLIP2Expert:
        return SigLIP2Expert(
            patch_size=spatial_patch(cfg),
            pooling=pooling,
            **frame_options(cfg),
            **common_options(cfg, drop_path_rates),
        )

    return build


FORMATS = (
    WeightFormat("Hugging Face SigLIP", is_hf_siglip, convert_hf_siglip),
    WeightFormat("Hugging Face SigLIP 2 NaFlex", is_hf_siglip2_naflex, convert_hf_siglip),
    WeightFormat("timm / open_clip SigLIP", is_timm_siglip, convert_timm_siglip),
)
