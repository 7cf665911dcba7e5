"""Spatial expert: the DINOv2 ViT image encoder (with or without registers) applied to every other frame."""

from __future__ import annotations

import torch
from torch import nn

from .base import Expert, ExpertBlock, block_stack
from .building import WeightFormat, common_options, frame_options, spatial_patch

REGISTERS = 4  # register tokens of the released "with registers" models (ViT-S/B/L/g 14)


class DINOv2Expert(Expert):
    """DINOv2 ViT over frames ``frame_offset, frame_offset + frame_stride, ...`` (as the CLIP expert).

    Patch conv with bias (patch 14), class token, ``1 + N`` learned positions (class row then the patch grid;
    the registers get none), then ``num_registers`` register tokens: each slot holds the class token, the
    registers, then the patches (``num_special = 1 + num_registers``). Pre-LN blocks with layer scale, GELU MLPs
    and LayerNorm eps 1e-6; per-frame self-attention; no norm before the blocks. The pooled feature is the final
    ``norm`` (DINOv2's last LayerNorm, trained with the adapters) of the class token averaged over frames.

    Position tables: the released weights hold 1 + 37×37 rows (518 px); they are resized once, at load time, to
    this model's grid (16×16 at 224 px) — bicubic to the target size with ``align_corners=False`` in float32,
    with the antialiased filter for the models with registers: what transformers' ``Dinov2Model`` and
    ``Dinov2WithRegistersModel`` compute on every forward, so tokens match theirs. (The original repository's
    models without registers interpolate by a scale factor of (16 + 0.1)/37, its ``interpolate_offset``, which
    samples the table slightly differently; ours follow transformers.)
    """

    modality = "video"
    per_slot_attention = True
    weights_license = "Apache-2.0 (DINOv2)"

    def __init__(
        self,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        img_size: int = 224,
        patch_size: int = 14,
        num_frames: int = 16,
        frame_stride: int = 2,
        frame_offset: int = 1,
        num_registers: int = 0,
        adapter_ratio: float = 0.25,
        drop_path_rates: list[float] | None = None,
    ):
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not a multiple of patch_size {patch_size}")
        side = img_size // patch_size
        self.patch_size = patch_size
        self.num_registers = num_registers
        self.num_special = 1 + num_registers
        self.frame_stride, self.frame_offset = frame_stride, frame_offset
        self.grid = (len(range(frame_offset, num_frames, frame_stride)), side * side)
        self.patch_embed = nn.Conv2d(3, embed_dim, patch_size, patch_size)
        self.cls_token = nn.Parameter(0.02 * torch.randn(embed_dim))
        self.register_tokens = nn.Parameter(0.02 * torch.randn(num_registers, embed_dim)) if num_registers else None
        self.pos_embed = nn.Parameter(0.02 * torch.randn(1 + side * side, embed_dim))
        self.blocks = block_stack(
            depth,
            drop_path_rates,
            lambda dp: ExpertBlock(
                embed_dim, num_heads, mlp_ratio, nn.GELU, 1e-6, "full", adapter_ratio, dp, layer_scale=True
            ),
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)

    def embed(self, video: torch.Tensor) -> torch.Tensor:
        images, B, T = self.frame_images(video)
        x = self.patch_embed(images).flatten(2).transpose(1, 2)
        cls = self.cls_token.to(x.dtype).expand(B * T, 1, -1)
        x = torch.cat((cls, x), dim=1) + self.pos_embed.to(x.dtype)
        if self.register_tokens is not None:
            registers = self.register_tokens.to(x.dtype).expand(B * T, -1, -1)
            x = torch.cat((x[:, :1], registers, x[:, 1:]), dim=1)
        return x.view(B, T, x.shape[1], x.shape[2])

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x[:, :, 0].mean(dim=1))

    def pos_tables(self):
        kind = "cls+space:antialias" if self.num_registers else "cls+space"
        return {"pos_embed": (kind, (self.grid[1],))}


def build(cfg, drop_path_rates: list[float], num_registers: int = 0) -> DINOv2Expert:
    """The DINOv2 spatial expert of a model config (patch ``spatial_patch_size``, every ``tubelet_size``-th frame)."""

    return DINOv2Expert(
        patch_size=spatial_patch(cfg),
        num_registers=num_registers,
        **frame_options(cfg),
        **common_options(cfg, drop_path_rates),
    )


def build_with_registers(cfg, drop_path_rates: list[float]) -> DINOv2Expert:
    """The DINOv2 spatial expert with its ``REGISTERS`` register tokens."""
    return build(cfg, drop_path_rates, num_registers=REGISTERS)


# ---------------------------------------------------------------- released weight layouts

# transformers' Dinov2Model / Dinov2WithRegistersModel (the Hub's names; q/k/v fused first)
HF_RULES = [
    ("embeddings.cls_token", "cls_token"),
    ("embeddings.register_tokens", "register_tokens"),
    ("embeddings.position_embeddings", "pos_embed"),
    ("embeddings.patch_embeddings.projection.", "patch_embed."),
    ("encoder.layer.{i}.norm1.", "blocks.{i}.norm1."),
    ("encoder.layer.{i}.attention.attention.qkv.", "blocks.{i}.attn.qkv."),
    ("encoder.layer.{i}.attention.output.dense.", "blocks.{i}.attn.proj."),
    ("encoder.layer.{i}.attention.o_proj.", "blocks.{i}.attn.proj."),  # transformers' in-memory name
    ("encoder.layer.{i}.layer_scale1.lambda1", "blocks.{i}.ls1.gamma"),
    ("encoder.layer.{i}.norm2.", "blocks.{i}.norm2."),
    ("encoder.layer.{i}.mlp.fc1.", "blocks.{i}.mlp.fc1."),
    ("encoder.layer.{i}.mlp.fc2.", "blocks.{i}.mlp.fc2."),
    ("encoder.layer.{i}.layer_scale2.lambda1", "blocks.{i}.ls2.gamma"),
    ("layernorm.", "norm."),
]
HF_PREFIXES = ("dinov2_with_registers.", "dinov2.")  # the backbone inside *ForImageClassification
HF_IGNORED = ("embeddings.mask_token", "classifier.")
# (q, k, v names, pattern of one of them): the Hub's files and transformers' in-memory state dict
HF_QKV = (
    (("query", "key", "value"), r"encoder\.layer\.(\d+)\.attention\.attention\.{part}\."),
    (("q_proj", "k_proj", "v_proj"), r"encoder\.layer\.(\d+)\.attention\.{part}\."),
)

# facebookresearch/dinov2 (torch hub): names are ours but for the patch conv; the mask token is unused
ORIGINAL_BLOCK = ("norm1.", "attn.qkv.", "attn.proj.", "ls1.gamma", "norm2.", "mlp.fc1.", "mlp.fc2.", "ls2.gamma")
ORIGINAL_RULES = [
    ("cls_token", "cls_token"),
    ("register_tokens", "register_tokens"),
    ("pos_embed", "pos_embed"),
    ("patch_embed.proj.", "patch_embed."),
    ("norm.", "norm."),
] + [("blocks.{i}." + name, "blocks.{i}." + name) for name in ORIGINAL_BLOCK]
ORIGINAL_IGNORED = ("mask_token",)


def is_hf_dinov2(sd: dict) -> bool:
    return any(k.endswith("embeddings.patch_embeddings.projection.weight") for k in sd) and any(
        k.endswith("layer_scale1.lambda1") for k in sd
    )


def is_original_dinov2(sd: dict) -> bool:
    return "patch_embed.proj.weight" in sd and "blocks.0.ls1.gamma" in sd


def _as_rows(sd: dict) -> dict:
    """Our class token is ``(D,)``, the registers ``(R, D)`` and the position table ``(1 + N, D)``."""
    out = dict(sd)
    if "cls_token" in out:
        out["cls_token"] = out["cls_token"].reshape(-1)
    for key in ("register_tokens", "pos_embed"):
        if key in out:
            out[key] = out[key].reshape(-1, out[key].shape[-1])
    return out


def convert_hf(sd: dict) -> tuple[dict, list[str]]:
    from ...checkpoints.hf import fuse_qkv  # the checkpoints package imports the models: import on use
    from ...checkpoints.io import Renamer, strip_prefixes

    sd = strip_prefixes(sd, HF_PREFIXES)
    for parts, pattern in HF_QKV:
        for kind in ("weight", "bias"):
            sd = fuse_qkv(sd, pattern + kind, parts, "encoder.layer.{}.attention.attention.qkv." + kind)
    out, unmatched = Renamer(HF_RULES).convert(sd)
    return _as_rows(out), [k for k in unmatched if not k.startswith(HF_IGNORED)]


def from_timm_registers(sd: dict) -> dict:
    """timm's DINOv2-with-registers layout (``reg_token``; ``no_embed_class``: the class token's position row
    folded into ``cls_token``, ``pos_embed`` holding the patch rows only) in the original one: a zero class row
    in front of the table, which gives the same class-token input."""
    if "reg_token" not in sd:
        return sd
    out = {k: v for k, v in sd.items() if k != "reg_token"}
    out["register_tokens"] = sd["reg_token"]
    pos = sd["pos_embed"].reshape(-1, sd["pos_embed"].shape[-1])
    out["pos_embed"] = torch.cat((torch.zeros_like(pos[:1]), pos))
    return out


def convert_original(sd: dict) -> tuple[dict, list[str]]:
    from ...checkpoints.io import Renamer  # the checkpoints package imports the models: import on use

    out, unmatched = Renamer(ORIGINAL_RULES).convert(from_timm_registers(sd))
    return _as_rows(out), [k for k in unmatched if not k.startswith(ORIGINAL_IGNORED)]


FORMATS = (
    WeightFormat("Hugging Face DINOv2", is_hf_dinov2, convert_hf),
    WeightFormat("DINOv2", is_original_dinov2, convert_original),
)
