"""Words for people: counts with their noun in the right number, and numbers rounded for reading."""

from __future__ import annotations

from typing import Any, Mapping

__all__ = ["plural", "readable", "readable_items"]


def plural(n: int, word: str, words: str | None = None) -> str:
    """``'1 window'``, ``'2 windows'``, ``'0 windows'``; ``words`` is the plural when it is not ``word + 's'``."""
    return f"{n} {word if n == 1 else words or word + 's'}"


def readable(value: Any) -> str:
    """A value as people read it: floats to 4 significant digits (``0.6000000238418579`` → ``'0.6'``)."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def readable_items(values: Mapping[str, Any]) -> str:
    """``'top1 0.6, epoch 2'``: each key and its :func:`readable` value."""
    return ", ".join(f"{k} {readable(v)}" for k, v in values.items())
