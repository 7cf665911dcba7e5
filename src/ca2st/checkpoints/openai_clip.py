"""OpenAI CLIP image tower (``ViT-B-16.pt`` TorchScript archive, open_clip or plain state dicts)."""

from __future__ import annotations

from .io import Renamer, StateDict

# OpenAI visual names -> spatial-expert names. Official CAST uses the same names with a ``clip_`` prefix.
CLIP_TOP = [
    ("conv1.weight", "patch_embed.weight"),
    ("class_embedding", "class_embedding"),
    ("positional_embedding", "pos_embed"),
    ("ln_pre.", "norm_pre."),
    ("ln_post.", "norm."),
]
CLIP_BLOCK = [
    ("ln_1.", "norm1."),
    ("attn.in_proj_weight", "attn.qkv.weight"),
    ("attn.in_proj_bias", "attn.qkv.bias"),
    ("attn.out_proj.", "attn.proj."),
    ("ln_2.", "norm2."),
    ("mlp.c_fc.", "mlp.fc1."),
    ("mlp.c_proj.", "mlp.fc2."),
]
RENAMER = Renamer(CLIP_TOP + [("transformer.resblocks.{i}." + s, "blocks.{i}." + d) for s, d in CLIP_BLOCK])
IGNORED = {"proj"}  # the 768 -> 512 projection into CLIP's joint space: unused by video models


def is_openai_clip(sd: StateDict) -> bool:
    return "visual.conv1.weight" in sd or ("conv1.weight" in sd and "transformer.resblocks.0.ln_1.weight" in sd)


def convert(sd: StateDict) -> tuple[StateDict, list[str]]:
    """Spatial-expert tensors and unexpected keys. A whole CLIP model is reduced to ``visual.*``."""
    if "visual.conv1.weight" in sd:
        sd = {k[len("visual.") :]: v for k, v in sd.items() if k.startswith("visual.")}
    out, unmatched = RENAMER.convert(sd)
    return out, [k for k in unmatched if k not in IGNORED]
