"""Annotation parsers (one module per format) producing :class:`Sample` records, and :class:`VideoDataset`.

``parse_annotations(path, format, **options)`` dispatches on the format name (see :data:`FORMATS`) or, without
one, guesses it from the file (:func:`guess_format`). Options are the parser's keyword arguments, e.g.
``classes=`` (an explicit class-map file), ``video_template=``, ``audio_template=``, ``split=``, ``mapping=``.
"""

from __future__ import annotations

import csv
import inspect
import re
import types
import typing
from pathlib import Path
from typing import Callable

from ...errors import ConfigError, DataError
from .activitynet import parse_activitynet
from .cast import parse_cast_ek100, parse_cast_k400, parse_cast_ssv2, parse_path_label
from .common import (
    Annotations,
    Sample,
    load_class_map,
    load_class_mapping,
    open_text,
    parse_timestamp,
    read_json,
    read_text,
    unique_samples,
)
from .epic_kitchens import parse_epic100
from .epic_sounds import parse_epic_sounds
from .hd_epic import parse_hd_epic, parse_hd_epic_sounds
from .kinetics import parse_kinetics, parse_kinetics_sound
from .ssv2 import parse_ssv2
from .ucf101 import parse_ucf101
from .vggsound import parse_vggsound
from .video_dataset import AudioSpec, VideoDataset, collate

__all__ = [
    "Sample",
    "Annotations",
    "FORMATS",
    "parse_annotations",
    "guess_format",
    "DATASET_NAMES",
    "dataset_name",
    "load_class_map",
    "load_class_mapping",
    "parse_timestamp",
    "VideoDataset",
    "AudioSpec",
    "collate",
]

FORMATS: dict[str, Callable[..., Annotations]] = {
    "cast_ek100": parse_cast_ek100,
    "cast_ssv2": parse_cast_ssv2,
    "cast_k400": parse_cast_k400,
    "path_label": parse_path_label,
    "epic100": parse_epic100,
    "ssv2": parse_ssv2,
    "kinetics": parse_kinetics,
    "kinetics_sound": parse_kinetics_sound,
    "ucf101": parse_ucf101,
    "vggsound": parse_vggsound,
    "epic_sounds": parse_epic_sounds,
    "hd_epic": parse_hd_epic,
    "hd_epic_sounds": parse_hd_epic_sounds,
    "activitynet": parse_activitynet,
}

DATASET_NAMES: dict[str, str] = {  # format -> the dataset's name in tables and results (as the papers spell it)
    "cast_ek100": "EK100",
    "epic100": "EK100",
    "cast_ssv2": "SSV2",
    "ssv2": "SSV2",
    "cast_k400": "K400",
    "kinetics": "K400",
    "kinetics_sound": "KineticsSound",
    "ucf101": "UCF-101",
    "vggsound": "VGG-Sound",
    "epic_sounds": "EPIC-SOUNDS",
    "hd_epic": "HD-EPIC",
    "hd_epic_sounds": "HD-EPIC-SOUNDS",
    "activitynet": "ActivityNet",
}


def dataset_name(format: str | None, path: str | Path) -> str:
    """The dataset's name for an annotation file of ``format`` (e.g. ``epic100`` → ``'EK100'``); for
    ``path_label`` and unknown formats, the annotation file's stem."""
    if format in DATASET_NAMES:
        return DATASET_NAMES[format]
    return Path(str(path)).stem


# UCF-101 clip names, whatever the container (the official .avi, or re-encoded .mp4): <Class>/v_<Class>_g08_c01
UCF101_CLIP = re.compile(r"(^|/)v_\w+_g\d+_c\d+\.\w+$")


def guess_format(path: str | Path) -> str:
    """The format of an annotation file from its content (header columns, JSON shape, row shape).

    ``'<file> <label>'`` lists are ambiguous between SSV2 and K400 and give ``'path_label'`` (needs
    ``num_classes``); pass the format explicitly (``cast_ssv2``, ``cast_k400``) to get the dataset defaults.
    """
    p = open_text(path)
    if p.suffix.lower() == ".pkl":
        raise DataError(f"{p}: pickles are not read; export it to CSV (HD-EPIC: format 'hd_epic')")
    if p.suffix.lower() == ".json":
        data = read_json(p)
        if isinstance(data, dict) and "database" in data:
            return "activitynet"
        if isinstance(data, list):
            return "ssv2"
        raise DataError(f"{p}: unknown JSON annotation layout; pass the format")
    first = next((ln.strip() for ln in read_text(p).splitlines() if ln.strip()), "")
    if not first:
        raise DataError(f"{p}: the annotation file is empty")
    header = {c.strip() for c in next(csv.reader([first]))}  # quoted headers too (the CVDF Kinetics CSVs)
    if "narration_id" in header:
        return "epic100"
    if "unique_narration_id" in header:
        return "hd_epic"
    if {"annotation_id", "video_id", "stop_timestamp"} <= header:  # the test file has no class columns
        return "epic_sounds"
    if {"video_id", "class_id", "start_sample"} <= header:
        return "hd_epic_sounds"
    if {"youtube_id", "time_start"} <= header:
        return "kinetics"
    parts = first.split(",")
    if len(parts) == 3 and parts[1].strip().isdigit() and parts[2].strip().isdigit():
        return "cast_ek100"
    if len(parts) == 4 and parts[1].strip().replace(".", "", 1).isdigit():
        return "vggsound"
    words = first.split()
    ucf = bool(words) and (UCF101_CLIP.search(words[0]) is not None or (p.parent / "classInd.txt").is_file())
    if len(words) == 2 and words[1].isdigit():
        return "ucf101" if ucf else "path_label"
    if len(words) == 1 and ucf:
        return "ucf101"
    raise DataError(
        f"{p}: cannot tell the annotation format from its first line {first[:80]!r}; pass the format "
        f"(one of {', '.join(FORMATS)})"
    )


def _is_instance(value, hint) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_is_instance(value, arm) for arm in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is Path:
        return isinstance(value, (str, Path))
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, origin or hint)


def check_option_types(name: str, fn: Callable[..., Annotations], options: dict) -> None:
    """Each option checked against the type the parser declares for it, so a wrong kind of value is a
    :class:`ConfigError` naming the option and the type (e.g. ``num_classes=97`` where HD-EPIC takes
    ``{'verb': V, 'noun': N}``), not a ``TypeError`` from inside the parser."""
    hints = typing.get_type_hints(fn)
    for key, value in options.items():
        hint = hints.get(key)
        if hint is not None and not _is_instance(value, hint):
            expected = " or ".join(str(a).replace("typing.", "") for a in typing.get_args(hint) or (hint,))
            expected = expected.replace("<class '", "").replace("'>", "").replace(" or NoneType", "")
            raise ConfigError(
                f"format {name!r}: option {key}={value!r} has the wrong type ({type(value).__name__}); "
                f"expected {expected}"
            )


def parse_annotations(path: str | Path, format: str | None = None, **options) -> Annotations:
    """Parse ``path`` with the named format's parser (guessed when ``format`` is None).

    Options the parser does not take raise :class:`ConfigError`; ``None`` values are dropped, so callers can
    pass every command-line option through. A file that gives no sample raises :class:`DataError`; a sample id
    twice is an error unless the rows are identical (then one is kept, with a warning: :func:`unique_samples`).
    """
    name = format or guess_format(path)
    if name not in FORMATS:
        raise ConfigError(f"unknown annotation format {name!r}: use one of {', '.join(FORMATS)}")
    fn = FORMATS[name]
    accepted = set(inspect.signature(fn).parameters) - {"path"}
    options = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ConfigError(f"format {name!r} takes no option(s) {unknown}; it takes {sorted(accepted)}")
    check_option_types(name, fn, options)
    annotations = fn(path, **options)
    if not annotations.samples:
        raise DataError(
            f"{path}: no samples in the {name} format: the file has no rows, or the options {options} filtered "
            f"out or excluded every row ({len(annotations.excluded)} excluded)"
        )
    annotations.samples = unique_samples(annotations.samples, path)
    return annotations
