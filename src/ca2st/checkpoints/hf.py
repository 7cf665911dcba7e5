"""Hugging Face transformers layouts: CLIPVisionModel / CLIPModel and VideoMAEModel /
VideoMAEForVideoClassification / VideoMAEForPreTraining (a local directory or a safetensors file)."""

from __future__ import annotations

import re

import torch

from .io import Renamer, StateDict

# the encoder of transformers' CLIP-style vision towers (CLIP, SigLIP, SigLIP 2), q/k/v fused by fuse_clip_qkv
CLIP_ENCODER_RULES = [
    ("encoder.layers.{i}.layer_norm1.", "blocks.{i}.norm1."),
    ("encoder.layers.{i}.self_attn.qkv.", "blocks.{i}.attn.qkv."),
    ("encoder.layers.{i}.self_attn.out_proj.", "blocks.{i}.attn.proj."),
    ("encoder.layers.{i}.layer_norm2.", "blocks.{i}.norm2."),
    ("encoder.layers.{i}.mlp.fc1.", "blocks.{i}.mlp.fc1."),
    ("encoder.layers.{i}.mlp.fc2.", "blocks.{i}.mlp.fc2."),
]
CLIP_RENAMER = Renamer(
    [
        ("embeddings.patch_embedding.weight", "patch_embed.weight"),
        ("embeddings.class_embedding", "class_embedding"),
        ("embeddings.position_embedding.weight", "pos_embed"),
        ("pre_layrnorm.", "norm_pre."),
        ("post_layernorm.", "norm."),
        *CLIP_ENCODER_RULES,
    ]
)
CLIP_IGNORED = ("text_model.", "visual_projection.", "text_projection.", "logit_scale", "embeddings.position_ids")

VIDEOMAE_RENAMER = Renamer(
    [
        ("embeddings.patch_embeddings.projection.", "patch_embed."),
        ("encoder.layer.{i}.layernorm_before.", "blocks.{i}.norm1."),
        ("encoder.layer.{i}.attention.attention.qkv.weight", "blocks.{i}.attn.qkv.weight"),
        ("encoder.layer.{i}.attention.attention.q_bias", "blocks.{i}.attn.q_bias"),
        ("encoder.layer.{i}.attention.attention.v_bias", "blocks.{i}.attn.v_bias"),
        ("encoder.layer.{i}.attention.output.dense.", "blocks.{i}.attn.proj."),
        ("encoder.layer.{i}.layernorm_after.", "blocks.{i}.norm2."),
        ("encoder.layer.{i}.intermediate.dense.", "blocks.{i}.mlp.fc1."),
        ("encoder.layer.{i}.output.dense.", "blocks.{i}.mlp.fc2."),
        ("fc_norm.", "norm."),
    ]
)
VIDEOMAE_IGNORED = ("classifier.", "layernorm.", "decoder.", "encoder_to_decoder.", "mask_token")


def is_hf_clip(sd: StateDict) -> bool:
    # the class embedding tells CLIP from SigLIP, whose vision tower shares the patch embedding's name
    return any(k.endswith("embeddings.class_embedding") for k in sd)


def is_hf_videomae(sd: StateDict) -> bool:
    """A tubelet (Conv3d) patch embedding: image ViTs share the key with a 4-D weight (DINOv2)."""
    return any(k.endswith("embeddings.patch_embeddings.projection.weight") and v.dim() == 5 for k, v in sd.items())


def fuse_qkv(sd: StateDict, pattern: str, parts: tuple[str, str, str], fused: str) -> StateDict:
    """Concatenate per-layer q/k/v tensors ``pattern.format(part)`` into one ``fused`` tensor."""
    out = dict(sd)
    regex = re.compile(pattern.format(part=re.escape(parts[0])))
    for key in list(sd):
        m = regex.fullmatch(key)
        if not m:
            continue
        names = [key.replace(parts[0], p, 1) for p in parts]
        if all(n in out for n in names):
            out[fused.format(*m.groups())] = torch.cat([out.pop(n) for n in names])
    return out


def fuse_clip_qkv(sd: StateDict) -> StateDict:
    """A CLIP-style encoder's per-layer ``self_attn.{q,k,v}_proj`` weights and biases fused into ``self_attn.qkv``."""
    for kind in ("weight", "bias"):
        sd = fuse_qkv(
            sd,
            r"encoder\.layers\.(\d+)\.self_attn\.{part}\." + kind,
            ("q_proj", "k_proj", "v_proj"),
            "encoder.layers.{}.self_attn.qkv." + kind,
        )
    return sd


def convert_clip(sd: StateDict) -> tuple[StateDict, list[str]]:
    sd = {k[len("vision_model.") :] if k.startswith("vision_model.") else k: v for k, v in sd.items()}
    out, unmatched = CLIP_RENAMER.convert(fuse_clip_qkv(sd))
    return out, [k for k in unmatched if not k.startswith(CLIP_IGNORED)]


def convert_videomae(sd: StateDict) -> tuple[StateDict, list[str]]:
    sd = {k[len("videomae.") :] if k.startswith("videomae.") else k: v for k, v in sd.items()}
    sd = fuse_qkv(
        sd,
        r"encoder\.layer\.(\d+)\.attention\.attention\.{part}\.weight",
        ("query", "key", "value"),
        "encoder.layer.{}.attention.attention.qkv.weight",
    )
    for part, name in (("query", "q_bias"), ("value", "v_bias")):
        for key in [k for k in sd if k.endswith(f".attention.attention.{part}.bias")]:
            sd[key.replace(f"{part}.bias", name)] = sd.pop(key)
    out, unmatched = VIDEOMAE_RENAMER.convert(sd)
    return out, [k for k in unmatched if not k.startswith(VIDEOMAE_IGNORED)]
