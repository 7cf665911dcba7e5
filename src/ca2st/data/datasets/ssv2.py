"""Something-Something v2 official JSON: ``labels.json`` + ``train.json`` / ``validation.json`` / ``test.json``.

Entries look like ``{"id": "78687", "template": "Holding [something] next to [something]", "label": ...,
"placeholders": [...]}``. The class is the **template** with its brackets removed, looked up in labels.json
(``{"Holding something next to something": "59", ...}``); the ``label`` field is the filled-in sentence and is
not a class name. Test entries (only an id) give unlabelled samples.
"""

from __future__ import annotations

import re
from pathlib import Path

from ...errors import DataError
from .common import Annotations, Sample, format_path, load_class_map, name_index, open_text, read_json

__all__ = ["parse_ssv2", "template_to_class"]

SSV2_CLASSES = 174


def template_to_class(template: str) -> str:
    """``'Putting [something] into [something]'`` → ``'Putting something into something'``."""
    return re.sub(r"\[([^\]]*)\]", r"\1", template).strip()


def parse_ssv2(
    path: str | Path,
    *,
    classes: str | Path | None = None,
    video_template: str = "{id}.webm",
    audio_template: str | None = None,
) -> Annotations:
    """Samples of an SSV2 JSON list; ``classes`` is the official labels.json (required: the class order is
    the file's, not alphabetical). Segment sampling, no horizontal flip (left/right matters)."""
    if classes is None:
        raise DataError(f"{path}: SSV2 needs classes= (the official something-something-v2-labels.json)")
    names = load_class_map(classes)
    index = name_index(names, classes)
    p = open_text(path)
    entries = read_json(p)
    if not isinstance(entries, list):
        raise DataError(f"{p}: expected a JSON list of {{id, template, ...}} entries")
    samples = []
    for k, e in enumerate(entries):
        where = f"{p}: entry {k}"
        if not isinstance(e, dict) or "id" not in e:
            raise DataError(f"{where}: malformed entry {str(e)[:80]!r}: expected an object with an 'id'")
        label = None
        if "template" in e:
            name = template_to_class(str(e["template"]))
            if name not in index:
                raise DataError(f"{where} (id {e['id']}): template {e['template']!r} is not a class of {classes}")
            label = index[name]
        vid = str(e["id"])
        samples.append(
            Sample(
                id=vid,
                path=format_path(video_template, where, id=vid),
                label=label,
                audio_path=format_path(audio_template, where, id=vid) if audio_template else None,
                source=where,
            )
        )
    return Annotations(samples, len(names), "ssv2", str(path), sampler="segment", flip=False, class_names=names)
