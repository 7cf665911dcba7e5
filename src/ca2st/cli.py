"""Command line: ``ca2st info NAME [key=value ...]``."""

from __future__ import annotations

import argparse
import ast
import logging
import sys

from .errors import Ca2stError, ConfigError


def parse_overrides(items: list[str]) -> dict:
    """``key=value`` strings to a dict; values are Python literals when they parse as one."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"expected key=value, got {item!r}")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def cmd_info(args) -> int:
    from .models.registry import list_models
    from .models.summary import summarize

    names = list_models() if args.name == "all" else [args.name]
    for name in names:
        s = summarize(name, **parse_overrides(args.overrides))
        print(f"{s.name}")
        for kind, (t, n) in s.experts.items():
            print(f"  expert {kind:<9} {t} time slots x {n} positions")
        for ex, layers in s.exchange_layers.items():
            print(f"  exchange {ex:<16} in {layers} layers")
        print(f"  input            {', '.join(f'{k} {tuple(v)}' for k, v in s.input_shapes.items())}")
        print(f"  parameters       {s.total_params:,} total, {s.trainable_params:,} trainable "
              f"({s.trainable_params / 1e6:.2f}M)")
        print(f"  forward          {s.gflops:.1f} GFLOPs per clip")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ca2st", description="CAST / CAVA / CA²ST video recognition")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="print a model's structure, parameter counts and GFLOPs")
    info.add_argument("name", help="preset name (e.g. cast_b16), or 'all'")
    info.add_argument("overrides", nargs="*", help="model options as key=value, e.g. num_classes=174")
    info.set_defaults(func=cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return args.func(args)
    except Ca2stError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
