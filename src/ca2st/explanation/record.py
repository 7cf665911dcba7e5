"""Read a model's attention during its own forward pass: B-CA maps per exchange, rollout per expert.

:class:`AttentionRecorder` registers forward pre-hooks on the modules whose attention it wants (the exchanges'
:class:`~ca2st.models.exchange.WindowedCrossAttention` sides of the chosen layers, every expert block's
:class:`~ca2st.models.layers.SelfAttention`) and enters :func:`~ca2st.models.attention.observe_attention`: each
:func:`~ca2st.models.attention.attention` call of those modules hands over the very ``q`` and ``k`` it computes
with, and the recorder turns them into probabilities (:func:`~ca2st.models.attention.attention_probabilities`).
The model's outputs are untouched; on leaving, hooks and observer are gone.

**B-CA maps.** One :class:`AttentionMap` per direction of an exchange: side ``a`` of exchange ``a_b`` queries
``b`` (direction ``B2A``: information flows from b to a), side ``b`` queries ``a`` (``A2B``). CAST's
``spatial_temporal`` gives ``T2S`` (each spatial position over the time slots) and ``S2T`` (each temporal slot
over the spatial positions); the audio exchanges give ``S2A``/``A2S`` and ``T2A``/``A2T``.

**Rollout** (Abnar & Zuidema, 2020) through each attention expert's self-attention: per layer the head-mean
``A``, ``Â = (A + I) / 2`` with rows renormalised, ``R = Â_L ⋯ Â_1``. The row read out follows how the expert
pools: the class token's row for CLIP (per frame) and the mean of the CLS and distillation rows for AST; the mean
over all query rows for VideoMAE, which pools by averaging its tokens. Special tokens are dropped from the keys.
The exchanges' residual updates between layers are not part of the product (rollout follows self-attention only).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError
from ..models.attention import attention_probabilities, observe_attention

__all__ = ["AttentionMap", "AttentionRecorder", "direction_names"]


def _letter(expert: str) -> str:
    return expert[0].upper()


def direction_names(a: str, b: str) -> tuple[str, str]:
    """Names of the two directions of exchange ``a_b``: (a querying b, b querying a), e.g. ``('T2S', 'S2T')``."""
    return f"{_letter(b)}2{_letter(a)}", f"{_letter(a)}2{_letter(b)}"


@dataclass
class AttentionMap:
    """The B-CA probabilities of one direction of one exchange in one layer, for one clip.

    ``probs`` (patch tokens only; a leading heads axis when ``per_head``): window ``time`` ``(T, N, Tk)`` — the
    query at slot t and position n over the key slots at n; ``space`` ``(T, N, Nk)`` — at slot t, the query at
    position n over the key positions of slot t; ``global`` ``(Lq, Lk)`` over the flattened ``(T, N)`` grids.
    ``q_grid`` and ``kv_grid``: (slots, positions) of the query and key side. Each row sums to one.
    """

    layer: int
    exchange: str
    direction: str
    query: str
    key: str
    window: str
    probs: torch.Tensor
    q_grid: tuple[int, int]
    kv_grid: tuple[int, int]
    per_head: bool = False

    @property
    def name(self) -> str:
        return f"layer{self.layer}.{self.exchange}.{self.direction}"

    def mean_heads(self) -> torch.Tensor:
        """``probs`` averaged over heads (as they are when not per head)."""
        return self.probs.mean(0) if self.per_head else self.probs

    def over_keys(self) -> torch.Tensor:
        """Where the queries look, as ``(images, positions)``: ``space`` and ``global`` — the mean over all
        query tokens of the weight on each key token, per key slot ``(Tk, Nk)``; ``time`` — per key slot, the
        weight each query position puts on it, averaged over the query slots ``(Tk, N)``. Rows of ``space`` and
        ``global`` sum to one over the keys of their slot (``space``) or over all slots together (``global``)."""
        p = self.mean_heads()
        if self.window == "space":
            return p.mean(1)
        if self.window == "time":
            return p.mean(0).transpose(0, 1)
        return p.mean(0).view(*self.kv_grid)


class AttentionRecorder:
    """Context manager that records the attention of ``model``'s forward passes inside it (see module docstring).

    ``layers``: the layers whose exchanges are recorded; ``exchanges``: exchange names (``spatial_temporal``) or
    directions (``S2T``) to keep (``None``: all); ``per_head``: keep the heads axis. One clip per forward (batch
    1). After the forward: :attr:`maps` (by :attr:`AttentionMap.name`) and :meth:`rollout`.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: list[int],
        *,
        per_head: bool = False,
        exchanges: list[str] | None = None,
    ):
        self.model = model
        self.layers = layers
        self.per_head = per_head
        self.wanted = self._check_exchanges(model, exchanges)
        self.maps: dict[str, AttentionMap] = {}
        self._products: dict[str, torch.Tensor] = {}
        self._current = None
        self._handles: list = []
        self._observing = None

    @staticmethod
    def _check_exchanges(model: nn.Module, exchanges: list[str] | None) -> set[str] | None:
        if exchanges is None:
            return None
        known = set()
        for layer in model.exchanges:
            for name, ex in layer.items():
                known.update((name, *direction_names(ex.a, ex.b)))
        unknown = sorted(set(exchanges) - known)
        if unknown:
            raise ConfigError(f"no exchange or direction {unknown} in this model; it has {sorted(known)}")
        return set(exchanges)

    def _keep(self, exchange: str, direction: str) -> bool:
        return self.wanted is None or exchange in self.wanted or direction in self.wanted

    # ------------------------------------------------------------------ hooks

    def __enter__(self) -> "AttentionRecorder":
        for i in self.layers:
            for name, ex in self.model.exchanges[i].items():
                for side, direction, query, key in zip(
                    (ex.attn_a, ex.attn_b), direction_names(ex.a, ex.b), (ex.a, ex.b), (ex.b, ex.a)
                ):
                    if self._keep(name, direction):
                        info = dict(layer=i, exchange=name, direction=direction, query=query, key=key)
                        self._hook(side, ("exchange", info))
        for kind, expert in self.model.experts.items():
            for block in getattr(expert, "blocks", []):
                attn = getattr(block, "attn", None)
                if attn is not None:
                    self._hook(attn, ("expert", kind))
        self._observing = observe_attention(self._observe)
        self._observing.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._observing.__exit__(*exc)
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._current = None

    def _hook(self, module: nn.Module, what) -> None:
        self._handles.append(module.register_forward_pre_hook(functools.partial(self._enter, what)))
        self._handles.append(module.register_forward_hook(self._leave))

    def _enter(self, what, module, args) -> None:
        self._current = (what, module, args)

    def _leave(self, module, args, output) -> None:
        self._current = None

    # ------------------------------------------------------------------ probabilities

    def _observe(self, q: torch.Tensor, k: torch.Tensor) -> None:
        if self._current is None:
            return
        (kind, info), module, args = self._current
        probs = attention_probabilities(q, k)
        if kind == "exchange":
            self._exchange(info, module, args, probs)
        else:
            self._rollout_step(info, probs)

    def _exchange(self, info: dict, module: nn.Module, args, probs: torch.Tensor) -> None:
        q_tokens, kv_tokens = args[0], args[1]
        B, T, N, _ = q_tokens.shape
        if B != 1:
            raise ConfigError(f"the attention recorder reads one clip at a time, got a batch of {B}")
        h = probs.shape[-3]
        if module.window == "time":  # (N, h, T, Tk) -> (h, T, N, Tk)
            probs = probs.view(N, h, T, probs.shape[-1]).permute(1, 2, 0, 3)
        elif module.window == "space":  # (T, h, N, Nk) -> (h, T, N, Nk)
            probs = probs.view(T, h, N, probs.shape[-1]).transpose(0, 1)
        else:  # (1, h, T·N, Tk·Nk) -> (h, Lq, Lk)
            probs = probs[0]
        amap = AttentionMap(
            **info,
            window=module.window,
            probs=(probs if self.per_head else probs.mean(0)).contiguous(),
            q_grid=(T, N),
            kv_grid=tuple(kv_tokens.shape[1:3]),
            per_head=self.per_head,
        )
        self.maps[amap.name] = amap

    def _rollout_step(self, expert: str, probs: torch.Tensor) -> None:
        a = probs.mean(-3)  # heads averaged: (windows, L, L)
        eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
        a = (a + eye) / 2
        a = a / a.sum(-1, keepdim=True)
        previous = self._products.get(expert)
        self._products[expert] = a if previous is None else a @ previous

    def rollout(self) -> dict[str, torch.Tensor]:
        """Per attention expert, the rollout over its patch tokens: video experts ``(T, N)``, audio ``(1, f·t)``
        (see the module docstring for the row read out)."""
        out = {}
        for kind, product in self._products.items():
            expert = self.model.experts[kind]
            special = expert.num_special
            rows = product[:, :special].mean(1) if special else product.mean(1)  # (windows, L)
            T, N = expert.grid
            out[kind] = rows[:, special:].reshape(T, N).contiguous()
        return out
