"""The one composed model: frozen experts, per-layer B-CA exchanges, a head.

Per layer: every expert's ``attend``; the layer's exchanges (S&T, then A&S, then A&T), one after
another or in parallel; every expert's ``feed_forward``. Then each expert pools its stream and the
head maps the pooled features to logits. CAST, CAVA and CA²ST are configurations of this class
(see ``registry.py``).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..data.recipe import InputRecipe
from ..data.transforms import normalize_clips, renormalize_clips
from ..errors import ConfigError
from ..tasks import check_class_names, model_tasks
from .attention import recompute_probabilities
from .config import ModelConfig
from .exchange import Exchange
from .experts.archs import build_expert
from .heads import ClassifierHead, CompositionHead
from .recompute import selective_checkpoint_context
from .time_encoding import TimeCodes, default_times

# Which experts feed which composition task: nouns from appearance, verbs from motion, both with sound.
COMPOSITION_SOURCES = {"noun": ("spatial", "audio"), "verb": ("temporal", "audio")}
AUDIO_HOP_SECONDS = 0.01  # log-mel frame shift


class MultiExpertModel(nn.Module):
    """Frozen experts joined by B-CA exchanges; see the module docstring for the layer order."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        depth = config.depth
        rates = [config.drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]  # linspace(0, rate, depth)
        self.experts = nn.ModuleDict({kind: build_expert(kind, config, rates) for kind in config.experts})
        width = int(config.embed_dim * config.bottleneck_ratio)
        self.exchanges = nn.ModuleList()
        for i in range(depth):
            layer = nn.ModuleDict()
            shared = {}
            for spec in config.exchange_plan():
                if i not in spec.layers:
                    continue
                ea, eb = self.experts[spec.a], self.experts[spec.b]
                ex = Exchange(
                    spec.a,
                    spec.b,
                    (ea.dim_at(i), eb.dim_at(i)),
                    width,
                    config.heads_in_exchanges,
                    (spec.window_a, spec.window_b),
                    (ea.grid_at(i), eb.grid_at(i)),
                    (ea.num_special, eb.num_special),
                    rates[i],
                    shared if config.share_bottleneck else None,
                )
                for kind in (spec.a, spec.b):
                    shared.setdefault(kind, ex.projection(kind))
                layer[spec.name] = ex
            self.exchanges.append(layer)
        self.input_recipe = InputRecipe.for_model(config)
        self._class_names: dict[str, list[str]] | None = None
        self.time_codes = None
        if config.time_encoding and "audio" in self.experts:
            self.time_codes = TimeCodes(width, self.experts["audio"].freq_time)
        self.head = self._build_head(config)
        self.grad_checkpointing = False
        self.freeze_experts()

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Checkpoint each layer when training: recompute it in the backward pass, except what
        :mod:`~ca2st.models.recompute` keeps (attention outputs and wide matrix products)."""
        self.grad_checkpointing = bool(enable)

    def _fusers(self, sources) -> dict[str, str]:
        return {
            s: "mlp"
            if s == "audio"
            else "adapter"
            if self.experts[s].feature_dim == self.config.embed_dim
            else "linear"
            for s in sources
        }

    def _build_head(self, cfg: ModelConfig) -> nn.Module:
        dims = {kind: e.feature_dim for kind, e in self.experts.items()}
        if cfg.composition:
            tasks = {}
            for task, num in cfg.composition_classes.items():
                sources = {s: dims[s] for s in COMPOSITION_SOURCES.get(task, ()) if s in dims}
                if not sources:
                    raise ConfigError(f"composition task {task!r} has no source expert in {list(dims)}")
                fusers = self._fusers(sources) if len(sources) > 1 else None
                tasks[task] = ClassifierHead(sources, fusers, cfg.embed_dim, num, cfg.adapter_ratio, cfg.head_drop_rate)
            return CompositionHead(tasks)
        return ClassifierHead(
            dims, self._fusers(dims), cfg.embed_dim, cfg.num_classes, cfg.adapter_ratio, cfg.head_drop_rate
        )

    def freeze_experts(self) -> None:
        """Freeze expert weights; adapters, final norms, exchanges, time codes and the head stay trainable."""
        for expert in self.experts.values():
            expert.requires_grad_(False)
            for module in expert.trainable_modules():
                module.requires_grad_(True)

    def cast_matmul_weights_(self, dtype: torch.dtype, trainable: bool = False) -> "MultiExpertModel":
        """Store matmul and convolution weights in ``dtype`` (e.g. bfloat16) for running under autocast to it.

        Autocast would otherwise cast these weights on every call: the outputs stay bit-identical while
        the weights take half the memory and the casts disappear. By default only the frozen experts'
        weights (training); ``trainable=True`` also casts the adapters, exchanges and head (evaluation and
        prediction, where nothing trains). Norms, position tables and biases outside linear layers stay
        float32. Without autocast the model then fails with a dtype mismatch; cast back to float32 to undo.
        """
        for module in self.modules():
            if not isinstance(module, (nn.Linear, nn.Conv2d, nn.Conv3d)):
                continue
            if trainable or not any(p.requires_grad for p in module.parameters()):
                module.to(dtype)
        return self

    @property
    def needs_audio(self) -> bool:
        return "audio" in self.experts

    def embed(self, video: torch.Tensor | None, audio: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        inputs = {"video": video, "audio": audio}
        streams = {}
        for kind, expert in self.experts.items():
            x = inputs[expert.modality]
            if x is None:
                raise ConfigError(
                    f"this model's {kind} expert needs {expert.modality} input, but none was given: "
                    f"call model(video, audio) with audio as (B, frames, mel bins) log-mel features"
                )
            if self.config.own_normalization and expert.modality == "video":
                recipe = self.input_recipe
                x = renormalize_clips(x, (recipe.mean, recipe.std), (expert.mean, expert.std))
            streams[kind] = expert.embed(x).float()  # the residual streams stay float32 (ca2st.precision)
        return streams

    def codes(self, times: torch.Tensor | None, batch: int, device) -> dict[str, torch.Tensor]:
        """Time codes per expert for the audio exchanges (empty without time encoding)."""
        if self.time_codes is None:
            return {}
        slots = next(e.grid[0] for k, e in self.experts.items() if k != "audio")
        if times is None:
            times = default_times(batch, slots, self.config.audio_frames * AUDIO_HOP_SECONDS, device)
        elif times.dim() != 3 or tuple(times.shape[1:]) != (1 + slots, 2):
            raise ValueError(
                f"times must have shape (B, {1 + slots}, 2): the audio window then the {slots} video "
                f"time slots as (start, end) seconds, got {tuple(times.shape)}"
            )
        video, audio = self.time_codes(times.to(device=device, dtype=torch.float32))
        return {"audio": audio, **{k: video for k in self.experts if k != "audio"}}

    def forward_layer(
        self, i: int, streams: dict[str, torch.Tensor], codes: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        streams = {kind: expert.attend(i, streams[kind]) for kind, expert in self.experts.items()}
        if self.config.fusion == "parallel":
            updates: dict[str, list[torch.Tensor]] = {}
            for ex in self.exchanges[i].values():
                da, db = ex(streams[ex.a], streams[ex.b], *self._pair_codes(ex, codes))
                updates.setdefault(ex.a, []).append(da)
                updates.setdefault(ex.b, []).append(db)
            for kind, deltas in updates.items():
                streams[kind] = streams[kind] + sum(deltas[1:], deltas[0]) / len(deltas)
        else:
            for ex in self.exchanges[i].values():
                da, db = ex(streams[ex.a], streams[ex.b], *self._pair_codes(ex, codes))
                streams[ex.a], streams[ex.b] = streams[ex.a] + da, streams[ex.b] + db
        return {kind: expert.feed_forward(i, streams[kind]) for kind, expert in self.experts.items()}

    @staticmethod
    def _pair_codes(ex: Exchange, codes: dict[str, torch.Tensor]):
        if "audio" not in (ex.a, ex.b):  # time codes live in the audio exchanges only
            return None, None
        return codes.get(ex.a), codes.get(ex.b)

    def normalize_video(self, video: torch.Tensor | None) -> torch.Tensor | None:
        """Uint8 clips (the loaders' transfer format) normalised with the input recipe's mean and std, on their
        device; float clips (already normalised) pass through."""
        if video is None:
            return None
        return normalize_clips(video, self.input_recipe.mean, self.input_recipe.std)

    def forward_features(
        self, video: torch.Tensor | None, audio: torch.Tensor | None = None, times: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Pooled, normalised feature of every expert, keyed by expert kind: :meth:`pool` of
        :meth:`forward_streams`.

        ``video``: ``(B, 3, T, S, S)`` normalised float clips, or uint8 pixels (normalised here with the input
        recipe's mean and std). ``times`` (optional, time-encoding models): ``(B, 1 + T, 2)`` seconds, the audio
        window then each video time slot; by default audio and video are taken as aligned over the audio window.
        """
        return self.pool(self.forward_streams(video, audio, times))

    def pool(self, streams: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each expert's pooled, normalised feature of its final stream."""
        return {kind: expert.pool(streams[kind]) for kind, expert in self.experts.items()}

    def forward_streams(
        self, video: torch.Tensor | None, audio: torch.Tensor | None = None, times: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Every expert's final token stream after the last layer's exchanges, before pooling, keyed by expert kind:
        ``(B, T, L, D)`` — T time slots of L tokens (the expert's special tokens first, then its patch grid; see
        :mod:`ca2st.models.experts.base`). Inputs as for :meth:`forward_features`."""
        self._check_video(video)
        video = self.normalize_video(video)
        streams = self.embed(video, audio)
        batch = next(iter(streams.values())).shape[0]
        codes = self.codes(times, batch, next(iter(streams.values())).device)
        for i in range(self.config.depth):
            if self.grad_checkpointing and torch.is_grad_enabled():
                # the policy keeps attention outputs, so the attention backward recomputes its probabilities
                with recompute_probabilities():
                    streams = checkpoint(
                        self.forward_layer,
                        i,
                        streams,
                        codes,
                        use_reentrant=False,
                        context_fn=selective_checkpoint_context,
                    )
            else:
                streams = self.forward_layer(i, streams, codes)
        return streams

    def forward(self, video: torch.Tensor | None, audio: torch.Tensor | None = None, times: torch.Tensor | None = None):
        return self.head(self.forward_features(video, audio, times))

    def _check_video(self, video: torch.Tensor | None) -> None:
        if video is None or not any(e.modality == "video" for e in self.experts.values()):
            return
        c = self.config
        expected = (3, c.num_frames, c.img_size, c.img_size)
        if video.dim() != 5 or tuple(video.shape[1:]) != expected:
            raise ValueError(
                f"video must have shape (B, {', '.join(map(str, expected))}) = (batch, RGB, frames, "
                f"height, width) for this model, got {tuple(video.shape)}; build the model with "
                f"num_frames/img_size matching the input"
            )

    def group_matcher(self, coarse: bool = False) -> dict:
        """Layer groups in timm's format (used for layer-wise lr decay): the experts' stems, then one group
        per layer holding each expert's block and the exchanges of that layer. The time-code MLPs join the
        first layer that carries an audio exchange; final norms and the head come last."""
        blocks = [(r"^experts\.\w+\.blocks\.(\d+)\.", None), (r"^exchanges\.(\d+)\.", None)]
        audio_layers = [i for i, layer in enumerate(self.exchanges) if any("audio" in n for n in layer)]
        if audio_layers:
            blocks.append((r"^time_codes\.", (audio_layers[0],)))
        stem = r"^experts\.\w+\.(?:patch_embed|class_embedding|pos_embed|norm_pre|cls_token|dist_token|conv1|bn1)"
        return {"stem": stem, "blocks": blocks}

    def pos_tables(self) -> dict[str, tuple[str, tuple[int, ...]]]:
        """Every resizable position table of the model: full parameter name -> (kind, grid)."""
        tables = {}
        for kind, expert in self.experts.items():
            tables.update({f"experts.{kind}.{n}": v for n, v in expert.pos_tables().items()})
        for i, layer in enumerate(self.exchanges):
            for name, exchange in layer.items():
                tables.update({f"exchanges.{i}.{name}.{n}": v for n, v in exchange.pos_tables().items()})
        return tables

    # ------------------------------------------------------------------ the model record

    @property
    def tasks(self) -> dict[str, int]:
        """Class count per task: ``{"class": C}``, or ``{"verb": 97, "noun": 300}`` for composition models."""
        return model_tasks(self.config)

    @property
    def class_names(self) -> dict[str, list[str]] | None:
        """Class names per task (like Hugging Face's ``id2label``), or ``None`` when unknown."""
        return self._class_names

    @class_names.setter
    def class_names(self, names) -> None:
        self._class_names = check_class_names(names, self.tasks)

    def label(self, task: str, index: int) -> str:
        """The name of class ``index`` of ``task`` (its number when the names are unknown)."""
        names = (self._class_names or {}).get(task)
        return names[index] if names else str(index)

    def save_pretrained(self, directory, **kwargs):
        """Write a shareable folder (config.json, trainable weights, model card; experts referenced by SHA-256):
        :func:`ca2st.checkpoints.pretrained.save_pretrained`, whose keyword arguments ``kwargs`` are. Load it
        with ``ca2st.from_pretrained``."""
        from ..checkpoints.pretrained import save_pretrained

        return save_pretrained(self, directory, **kwargs)
