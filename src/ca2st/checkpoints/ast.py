"""AST checkpoints: the official code base (``module.v.*``, a timm DeiT) and Hugging Face
``ASTModel`` / ``ASTForAudioClassification`` (both the older ``encoder.layer.*`` and the newer
``layers.*`` key layouts)."""

from __future__ import annotations

from .hf import fuse_qkv
from .io import Renamer, StateDict, strip_prefixes

OFFICIAL = Renamer(
    [
        ("cls_token", "cls_token"),
        ("dist_token", "dist_token"),
        ("pos_embed", "pos_embed"),
        ("patch_embed.proj.", "patch_embed."),
        ("norm.", "norm."),
        ("blocks.{i}.norm1.", "blocks.{i}.norm1."),
        ("blocks.{i}.attn.qkv.", "blocks.{i}.attn.qkv."),
        ("blocks.{i}.attn.proj.", "blocks.{i}.attn.proj."),
        ("blocks.{i}.norm2.", "blocks.{i}.norm2."),
        ("blocks.{i}.mlp.fc1.", "blocks.{i}.mlp.fc1."),
        ("blocks.{i}.mlp.fc2.", "blocks.{i}.mlp.fc2."),
    ]
)
OFFICIAL_IGNORED = ("head.", "head_dist.", "mlp_head.")

_HF_COMMON = [
    ("embeddings.cls_token", "cls_token"),
    ("embeddings.distillation_token", "dist_token"),
    ("embeddings.position_embeddings", "pos_embed"),
    ("embeddings.patch_embeddings.projection.", "patch_embed."),
    ("layernorm.", "norm."),
]
HF = Renamer(
    _HF_COMMON
    + [
        # transformers < 5 (and checkpoints saved with it)
        ("encoder.layer.{i}.layernorm_before.", "blocks.{i}.norm1."),
        ("encoder.layer.{i}.attention.attention.qkv.", "blocks.{i}.attn.qkv."),
        ("encoder.layer.{i}.attention.output.dense.", "blocks.{i}.attn.proj."),
        ("encoder.layer.{i}.layernorm_after.", "blocks.{i}.norm2."),
        ("encoder.layer.{i}.intermediate.dense.", "blocks.{i}.mlp.fc1."),
        ("encoder.layer.{i}.output.dense.", "blocks.{i}.mlp.fc2."),
        # transformers >= 5
        ("layers.{i}.layernorm_before.", "blocks.{i}.norm1."),
        ("layers.{i}.attention.qkv.", "blocks.{i}.attn.qkv."),
        ("layers.{i}.attention.o_proj.", "blocks.{i}.attn.proj."),
        ("layers.{i}.layernorm_after.", "blocks.{i}.norm2."),
        ("layers.{i}.mlp.fc1.", "blocks.{i}.mlp.fc1."),
        ("layers.{i}.mlp.fc2.", "blocks.{i}.mlp.fc2."),
    ]
)
HF_IGNORED = ("classifier.",)


def is_official_ast(sd: StateDict) -> bool:
    return "v.patch_embed.proj.weight" in sd or "module.v.patch_embed.proj.weight" in sd


def is_hf_ast(sd: StateDict) -> bool:
    return any(k.endswith("embeddings.distillation_token") for k in sd)


def _flatten_tokens(sd: StateDict) -> StateDict:
    """Our cls/dist tokens are ``(D,)`` and the position table ``(rows, D)``."""
    return {
        k: v.reshape(-1, v.shape[-1]) if k == "pos_embed" else v.reshape(-1) if k.endswith("_token") else v
        for k, v in sd.items()
    }


def convert_official(sd: StateDict) -> tuple[StateDict, list[str]]:
    sd = strip_prefixes(sd, ("module.",))
    unexpected = [k for k in sd if not k.startswith("v.") and not k.startswith(OFFICIAL_IGNORED)]
    sd = {k[2:]: v for k, v in sd.items() if k.startswith("v.")}
    out, unmatched = OFFICIAL.convert(sd)
    return _flatten_tokens(out), unexpected + [k for k in unmatched if not k.startswith(OFFICIAL_IGNORED)]


def convert_hf(sd: StateDict) -> tuple[StateDict, list[str]]:
    sd = strip_prefixes(sd, ("audio_spectrogram_transformer.",))
    for kind in ("weight", "bias"):
        sd = fuse_qkv(
            sd,
            r"encoder\.layer\.(\d+)\.attention\.attention\.{part}\." + kind,
            ("query", "key", "value"),
            "encoder.layer.{}.attention.attention.qkv." + kind,
        )
        sd = fuse_qkv(
            sd,
            r"layers\.(\d+)\.attention\.{part}\." + kind,
            ("q_proj", "k_proj", "v_proj"),
            "layers.{}.attention.qkv." + kind,
        )
    out, unmatched = HF.convert(sd)
    return _flatten_tokens(out), [k for k in unmatched if not k.startswith(HF_IGNORED)]
