"""VideoMAE checkpoints of the original code base (pre-training with ``encoder.``, fine-tuned)."""

from __future__ import annotations

from .io import Renamer, StateDict, strip_prefixes

VMAE_TOP = [("patch_embed.proj.", "patch_embed."), ("fc_norm.", "norm.")]
VMAE_BLOCK = [
    ("norm1.", "norm1."),
    ("attn.qkv.weight", "attn.qkv.weight"),
    ("attn.q_bias", "attn.q_bias"),
    ("attn.v_bias", "attn.v_bias"),
    ("attn.proj.", "attn.proj."),
    ("norm2.", "norm2."),
    ("mlp.fc1.", "mlp.fc1."),
    ("mlp.fc2.", "mlp.fc2."),
]
RENAMER = Renamer(VMAE_TOP + [("blocks.{i}." + s, "blocks.{i}." + d) for s, d in VMAE_BLOCK])
# Classification head, pre-training decoder, and the token norm of pre-training (not the pooled norm).
IGNORED_PREFIXES = ("head.", "decoder.", "encoder_to_decoder.", "mask_token", "norm.")


def is_videomae(sd: StateDict) -> bool:
    """A tubelet (Conv3d) patch embedding: image ViTs share the key with a 4-D weight (DINOv2)."""
    patch = strip_prefixes(
        {k: v for k, v in sd.items() if k.endswith("patch_embed.proj.weight")}, ("encoder.", "backbone.")
    ).get("patch_embed.proj.weight")
    return patch is not None and patch.dim() == 5


def convert(sd: StateDict) -> tuple[StateDict, list[str]]:
    """Temporal-expert tensors (plus a learned ``pos_embed`` if the file has one) and unexpected keys."""
    sd = strip_prefixes(sd, ("encoder.", "backbone."))
    pos = sd.pop("pos_embed", None)
    out, unmatched = RENAMER.convert(sd)
    if pos is not None:
        out["pos_embed"] = pos.reshape(-1, pos.shape[-1])
    return out, [k for k in unmatched if not k.startswith(IGNORED_PREFIXES)]
