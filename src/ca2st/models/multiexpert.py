"""The one composed model: frozen experts, per-layer B-CA exchanges, a head.

Per layer: every expert's ``attend``; the layer's exchanges in order; every expert's
``feed_forward``. Then each expert pools its stream and the head maps the pooled features to logits.
CAST, CAVA and CA²ST are configurations of this class (see ``registry.py``).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..errors import ConfigError
from .config import ModelConfig
from .exchange import Exchange
from .experts import CLIPExpert, Expert, VideoMAEExpert
from .heads import ClassifierHead, CompositionHead

# Which expert feeds which composition task (EPIC-KITCHENS: nouns from appearance, verbs from motion).
COMPOSITION_SOURCES = {"noun": ("spatial",), "verb": ("temporal",)}


def build_expert(kind: str, cfg: ModelConfig, drop_path_rates: list[float]) -> Expert:
    common = dict(embed_dim=cfg.embed_dim, depth=cfg.depth, num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_ratio,
                  img_size=cfg.img_size, patch_size=cfg.patch_size, num_frames=cfg.num_frames,
                  adapter_ratio=cfg.adapter_ratio, drop_path_rates=drop_path_rates)
    if kind == "spatial":
        return CLIPExpert(frame_stride=cfg.tubelet_size, frame_offset=cfg.tubelet_size - 1, **common)
    if kind == "temporal":
        return VideoMAEExpert(tubelet_size=cfg.tubelet_size, **common)
    raise ConfigError(f"unknown expert {kind!r}")


class MultiExpertModel(nn.Module):
    """Frozen experts joined by B-CA exchanges; see the module docstring for the layer order."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        depth = config.depth
        rates = [config.drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]  # linspace(0, rate, depth)
        self.experts = nn.ModuleDict({kind: build_expert(kind, config, rates) for kind in config.experts})
        self.exchanges = nn.ModuleList()
        for i in range(depth):
            layer = nn.ModuleDict()
            for spec in config.exchanges:
                if spec.layers is None or i in spec.layers:
                    ea, eb = self.experts[spec.a], self.experts[spec.b]
                    layer[spec.name] = Exchange(
                        spec.a, spec.b, config.embed_dim, config.bottleneck_ratio, config.heads_in_exchanges,
                        spec.window_a, spec.window_b, ea.grid, eb.grid, ea.num_special, eb.num_special, rates[i])
            self.exchanges.append(layer)
        self.head = self._build_head(config)
        self.grad_checkpointing = config.grad_checkpointing
        self.freeze_experts()

    def _build_head(self, cfg: ModelConfig) -> nn.Module:
        if cfg.composition:
            tasks = {}
            for task, num in cfg.composition_classes.items():
                sources = tuple(s for s in COMPOSITION_SOURCES.get(task, ()) if s in self.experts)
                if not sources:
                    raise ConfigError(f"composition task {task!r} has no source expert in {list(self.experts)}")
                tasks[task] = ClassifierHead(sources, cfg.embed_dim, num, drop=cfg.head_drop_rate)
            return CompositionHead(tasks)
        return ClassifierHead(tuple(self.experts), cfg.embed_dim, cfg.num_classes, fuse_ratio=cfg.adapter_ratio,
                              drop=cfg.head_drop_rate)

    def freeze_experts(self) -> None:
        """Freeze expert weights; adapters, final norms, exchanges and the head stay trainable."""
        for expert in self.experts.values():
            expert.requires_grad_(False)
            for module in expert.trainable_modules():
                module.requires_grad_(True)

    def embed(self, video: torch.Tensor | None, audio: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        inputs = {"video": video, "audio": audio}
        streams = {}
        for kind, expert in self.experts.items():
            x = inputs[expert.modality]
            if x is None:
                raise ConfigError(f"this model's {kind} expert needs {expert.modality} input, but none was given")
            streams[kind] = expert.embed(x)
        return streams

    def forward_layer(self, i: int, streams: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        streams = {kind: expert.attend(i, streams[kind]) for kind, expert in self.experts.items()}
        for exchange in self.exchanges[i].values():
            streams[exchange.a], streams[exchange.b] = exchange(streams[exchange.a], streams[exchange.b])
        return {kind: expert.feed_forward(i, streams[kind]) for kind, expert in self.experts.items()}

    def forward_features(self, video: torch.Tensor | None, audio: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Pooled, normalised feature ``(B, D)`` of every expert, keyed by expert kind."""
        self._check_video(video)
        streams = self.embed(video, audio)
        for i in range(self.config.depth):
            if self.grad_checkpointing and torch.is_grad_enabled():
                streams = checkpoint(self.forward_layer, i, streams, use_reentrant=False)
            else:
                streams = self.forward_layer(i, streams)
        return {kind: expert.pool(streams[kind]) for kind, expert in self.experts.items()}

    def forward(self, video: torch.Tensor | None, audio: torch.Tensor | None = None):
        return self.head(self.forward_features(video, audio))

    def _check_video(self, video: torch.Tensor | None) -> None:
        if video is None or not any(e.modality == "video" for e in self.experts.values()):
            return
        c = self.config
        expected = (3, c.num_frames, c.img_size, c.img_size)
        if video.dim() != 5 or tuple(video.shape[1:]) != expected:
            raise ValueError(f"video must have shape (B, {', '.join(map(str, expected))}) = (batch, RGB, frames, "
                             f"height, width) for this model, got {tuple(video.shape)}; build the model with "
                             f"num_frames/img_size matching the input")

    def pos_tables(self) -> dict[str, tuple[str, tuple[int, ...]]]:
        """Every resizable position table of the model: full parameter name -> (kind, grid)."""
        tables = {}
        for kind, expert in self.experts.items():
            tables.update({f"experts.{kind}.{n}": v for n, v in expert.pos_tables().items()})
        for i, layer in enumerate(self.exchanges):
            for name, exchange in layer.items():
                tables.update({f"exchanges.{i}.{name}.{n}": v for n, v in exchange.pos_tables().items()})
        return tables
