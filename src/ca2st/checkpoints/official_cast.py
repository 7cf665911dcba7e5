"""Released CAST checkpoints (KHU-VLL/CAST ``STCrossTransformer``): key layout, architecture
inference and loading. ``to_official_state_dict`` writes the same layout back."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, ConfigError
from ..models import MultiExpertModel, build_model
from . import openai_clip, videomae
from .io import Renamer, StateDict, load_strict, read_state_dict, resize_tables, strip_prefixes

_S, _T, _X = "experts.spatial.", "experts.temporal.", "exchanges.{i}.spatial_temporal."


def _rules(composition: bool) -> list[tuple[str, str]]:
    rules = [("clip_" + s, _S + d) for s, d in openai_clip.CLIP_TOP]
    rules += [("blocks.{i}.clip_" + s, _S + "blocks.{i}." + d) for s, d in openai_clip.CLIP_BLOCK]
    rules += [("patch_embed.proj.", _T + "patch_embed."), ("vmae_fc_norm.", _T + "norm.")]
    rules += [("blocks.{i}." + s, _T + "blocks.{i}." + d) for s, d in videomae.VMAE_BLOCK]
    for official, expert, slot in (
        ("S_Adapter", _S, "attn_adapter"),
        ("S_MLP_Adapter", _S, "mlp_adapter"),
        ("T_Adapter", _T, "attn_adapter"),
        ("T_MLP_Adapter", _T, "mlp_adapter"),
    ):
        rules += [(f"blocks.{{i}}.{official}.D_fc{n}.", f"{expert}blocks.{{i}}.{slot}.fc{n}.") for n in (1, 2)]
    # B-CA: side a = spatial (CLIP), side b = temporal (VideoMAE); T2S updates a, S2T updates b.
    for official, ours in (
        ("cross_s_down.", "proj_a.down."),
        ("cross_t_down.", "proj_b.down."),
        ("ln_s_cross.", "norm_a."),
        ("ln_t_cross.", "norm_b."),
        ("cross_s_up.", "proj_a.up."),
        ("cross_t_up.", "proj_b.up."),
        ("t2s_cross.clip_time_pos", "attn_a.q_pos"),
        ("t2s_cross.vmae_time_pos", "attn_a.kv_pos"),
        ("t2s_cross.t2s_q.weight", "attn_a.q.weight"),
        ("t2s_cross.t2s_q_bias", "attn_a.q.bias"),
        ("t2s_cross.t2s_kv.weight", "attn_a.kv.weight"),
        ("t2s_cross.t2s_kv_bias", "attn_a.kv.bias"),
        ("t2s_cross.t2s_proj.", "attn_a.proj."),
        ("s2t_cross.vmae_space_pos", "attn_b.q_pos"),
        ("s2t_cross.clip_space_pos", "attn_b.kv_pos"),
        ("s2t_cross.s2t_q.weight", "attn_b.q.weight"),
        ("s2t_cross.s2t_q_bias", "attn_b.q.bias"),
        ("s2t_cross.s2t_kv.weight", "attn_b.kv.weight"),
        ("s2t_cross.s2t_kv_bias", "attn_b.kv.bias"),
        ("s2t_cross.t2s_proj.", "attn_b.proj."),
    ):
        rules.append(("blocks.{i}." + official, _X + ours))
    if composition:
        rules += [("head_noun.", "head.tasks.noun.fc."), ("head_verb.", "head.tasks.verb.fc.")]
    else:
        rules += [
            ("noun_last_Adapter.D_fc1.", "head.fuse.spatial.fc1."),
            ("noun_last_Adapter.D_fc2.", "head.fuse.spatial.fc2."),
            ("verb_last_Adapter.D_fc1.", "head.fuse.temporal.fc1."),
            ("verb_last_Adapter.D_fc2.", "head.fuse.temporal.fc2."),
            ("head.", "head.fc."),
        ]
    return rules


def renamer(composition: bool) -> Renamer:
    """Official CAST names -> ca2st names."""
    return Renamer(_rules(composition))


def _require(sd: StateDict, key: str, path) -> Any:
    if key not in sd:
        raise CheckpointError(
            f"{path}: does not look like an official CAST checkpoint: no {key!r} (first keys: {sorted(sd)[:8]})"
        )
    return sd[key]


def infer_config(sd: StateDict, path="checkpoint") -> dict[str, Any]:
    """Architecture of an official CAST state dict, read from tensor shapes (heads cannot be read)."""
    conv = _require(sd, "clip_conv1.weight", path)
    dim, patch = conv.shape[0], conv.shape[-1]
    tubelet = _require(sd, "patch_embed.proj.weight", path).shape[2]
    depth = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k)))
    time_slots = _require(sd, "blocks.0.t2s_cross.clip_time_pos", path).shape[0]
    positions = _require(sd, "clip_positional_embedding", path).shape[0] - 1
    side = round(positions**0.5)
    cfg = dict(
        embed_dim=dim,
        depth=depth,
        patch_size=patch,
        img_size=side * patch,
        tubelet_size=tubelet,
        num_frames=time_slots * tubelet,
        mlp_ratio=_require(sd, "blocks.0.clip_mlp.c_fc.weight", path).shape[0] / dim,
        adapter_ratio=_require(sd, "blocks.0.S_Adapter.D_fc1.weight", path).shape[0] / dim,
        bottleneck_ratio=_require(sd, "blocks.0.cross_s_down.weight", path).shape[0] / dim,
    )
    if "head_noun.weight" in sd or "head_verb.weight" in sd:
        cfg["composition"] = True
        cfg["composition_classes"] = {
            "verb": _require(sd, "head_verb.weight", path).shape[0],
            "noun": _require(sd, "head_noun.weight", path).shape[0],
        }
    else:
        cfg["composition"] = False
        cfg["num_classes"] = _require(sd, "head.weight", path).shape[0]
    return cfg


def load_official_cast(path: str | Path, **overrides: Any) -> MultiExpertModel:
    """Build a CAST model from a released checkpoint and load it strictly; returns it in eval mode.

    Accepts ``{'model': sd}``, ``{'module': sd}``, a bare state dict, ``module.``-prefixed keys, a
    DeepSpeed checkpoint directory and safetensors. The architecture comes from the tensors; the
    head count (default 12) and anything else can be overridden. With ``num_frames`` / ``img_size``
    overrides the position tables are resized (see ``ca2st.models.layers.resize_pos_table``).
    """
    sd = strip_prefixes(read_state_dict(path), ("module.", "backbone."))
    cfg = infer_config(sd, path)
    cfg.update(overrides)
    try:
        model = build_model("cast_b16_ek100" if cfg["composition"] else "cast_b16", **cfg)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err} (checkpoints do not store the head count: pass num_heads=...)") from err
    names = renamer(model.config.composition)
    converted, unmatched = names.convert(sd)
    converted = resize_tables(converted, model.pos_tables())
    back = names.inverse()
    load_strict(model, converted, path, unexpected=unmatched, describe=lambda k: back.rename(k) or k)
    return model.eval()


def to_official_state_dict(model: MultiExpertModel) -> StateDict:
    """The model's weights under official CAST names (for the official code or its checkpoints)."""
    back = renamer(model.config.composition).inverse()
    out = {}
    for key, value in model.state_dict().items():
        name = back.rename(key)
        if name is None:
            raise CheckpointError(f"{key} has no official CAST name; only CAST models can be exported")
        out[name] = value
    return out
