"""``prepare_dataset``: the whole run, from the annotation file to the outputs and the new annotation."""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections import defaultdict
from dataclasses import asdict, replace
from pathlib import Path

from tqdm.auto import tqdm

from ...errors import ConfigError, DataError
from ..datasets import guess_format, parse_annotations
from ..datasets.common import Sample
from .annotation import AnnotationText, Cut, line_of, plan_cut, rewrite_annotation
from .encode import ClipSpec, SourceJob, run_jobs
from .records import (
    PART_SUFFIX,
    SEGMENT_FORMATS,
    SETTINGS_FILE,
    SUPPORTED_FORMATS,
    PrepareFailure,
    PrepareReport,
    PrepareSettings,
)

log = logging.getLogger(__name__)


def check_settings_file(out: Path, settings: PrepareSettings) -> None:
    """Record ``settings`` in ``out/prepare.json``; a folder prepared with other settings is refused (its finished
    files would be skipped and mixed with differently encoded ones)."""
    path = out / SETTINGS_FILE
    record = asdict(settings)
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            old = None
        if old != record:
            before = old if isinstance(old, dict) else {}
            diff = ", ".join(f"{k} {before.get(k)!r} -> {v!r}" for k, v in record.items() if before.get(k) != v)
            raise ConfigError(
                f"{out} was prepared with other settings ({diff or 'unreadable ' + SETTINGS_FILE}): use another "
                f"output folder, or delete {path} and the files to redo them"
            )
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def resolve(path: str, root: Path | None) -> Path:
    p = Path(path)
    return p if p.is_absolute() or root is None else root / p


def prepare_dataset(
    annotation: str | Path,
    root: str | Path | None,
    out: str | Path,
    *,
    format: str | None = None,
    settings: PrepareSettings | None = None,
    output_annotation: str | Path | None = None,
    workers: int | None = None,
    progress: bool = True,
    **options,
) -> PrepareReport:
    """Re-encode every video of ``annotation`` (paths relative to ``root``) into ``out`` and write the new
    annotation (default ``out/<annotation's name>``); ``options`` go to the format's parser (``video_template=``,
    ``classes=``, ...) and apply to the new file too. Returns a :class:`PrepareReport`; a malformed annotation
    file raises :class:`DataError`, an unsupported format or bad settings :class:`ConfigError`.
    """
    settings = settings or PrepareSettings()
    settings.check()
    workers = default_workers() if workers is None else workers
    if not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be a positive number of processes, got {workers!r}")
    if options.get("audio_template") is not None:
        raise ConfigError(
            "audio_template: separate audio files are not prepared; prepare the videos without it (their own "
            "tracks are kept), and point the new annotation at the audio files with data.root or an absolute template"
        )
    name = format or guess_format(annotation)
    if name not in SUPPORTED_FORMATS:
        raise ConfigError(
            f"{annotation}: preparing the {name} format is not supported; supported formats: "
            f"{', '.join(SUPPORTED_FORMATS)}"
        )
    ann = parse_annotations(annotation, name, **options)
    root = Path(root) if root is not None else None
    out = Path(out)
    new_annotation = Path(output_annotation) if output_annotation else out / Path(annotation).name
    if new_annotation.resolve() == Path(annotation).resolve():
        raise ConfigError(f"{new_annotation}: the new annotation file would overwrite the input; choose another")
    check_settings_file(out, settings)
    if ann.format == "ucf101" and options.get("classes") is None:  # the parser looks for classInd.txt beside it
        new_annotation.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(annotation).with_name("classInd.txt"), new_annotation.with_name("classInd.txt"))
    report = PrepareReport(str(annotation), ann.format, str(out), None, len(ann.samples))
    failed: dict[str, PrepareFailure] = {}  # per source path

    cut = settings.cut_segments and ann.format in SEGMENT_FORMATS
    samples, cuts = plan_cuts(ann.samples, root, settings, failed, progress) if cut else (ann.samples, {})
    text = rewrite_annotation(str(annotation), ann.format, samples, cuts, settings.fps)
    new_paths = reparse_paths(text, samples, new_annotation, ann.format, options)

    jobs: dict[str, list[ClipSpec]] = defaultdict(list)
    users: dict[str, list[Sample]] = defaultdict(list)  # output -> samples
    origin: dict[str, Sample] = {}  # output -> its first sample
    for s in samples:
        output = new_paths[s.id]
        if output.is_absolute():
            raise ConfigError(f"{s.source}: the new path {output} is absolute; the path template must be relative")
        output = str(out / output)
        first = origin.setdefault(output, s)
        if first.path != s.path:
            raise ConfigError(
                f"{s.source}: {s.path} and {first.path} ({first.source}) would both be written to {output}"
            )
        if first is s:
            c = cuts.get(s.id)
            spec = ClipSpec(output) if c is None else ClipSpec(output, c.clip_first, c.clip_stop, c.count)
            jobs[str(resolve(s.path, root))].append(spec)
        users[output].append(s)
    todo = []
    for source, specs in jobs.items():
        if len(specs) > 1 and any(s.stop is None for s in specs):
            raise ConfigError(f"{source}: whole-file outputs {specs[0].output} and {specs[1].output} share the source")
        remaining = tuple(s for s in specs if not os.path.isfile(s.output))
        report.skipped += len(specs) - len(remaining)
        if remaining:
            todo.append(SourceJob(source, remaining, settings))
    outcomes = run_jobs(todo, workers, progress)
    bad_outputs: set[str] = set()
    for job, results in zip(todo, outcomes):
        for output, reason in results:
            if reason is None:
                report.encoded += 1
                continue
            bad_outputs.add(output)
            ids = tuple(s.id for s in users[output])
            where = job.source if len(job.clips) == 1 else f"{job.source} (segment {ids[0]})"
            failed.setdefault(where, PrepareFailure(where, reason))
            old = failed[where]
            failed[where] = replace(old, samples=old.samples + ids)
    report.failures = list(failed.values())
    for f in report.failures:
        log.info("%s", f)
    kept = [s for s in samples if str(out / new_paths[s.id]) not in bad_outputs]
    report.prepared = len(kept)
    if kept:
        write_atomically(new_annotation, text.text([line_of(s) for s in kept]))
        report.output_annotation = str(new_annotation)
    return report


def plan_cuts(samples, root, settings, failed, progress) -> tuple[list[Sample], dict[str, Cut]]:
    """Each sample's clip (see :func:`plan_cut`), from a probe of its video; samples whose video cannot be probed
    or whose segment lies outside it go to ``failed`` (per source) and are dropped."""
    from ..decode import probe

    by_path: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        by_path[s.path].append(s)
    kept, cuts = [], {}
    for rel, group in tqdm(by_path.items(), desc="probing videos", unit="file", disable=not progress):
        path = str(resolve(rel, root))
        try:
            info = probe(path)
        except DataError as err:
            failed[path] = PrepareFailure(path, str(err).removeprefix(f"{path}: "), tuple(s.id for s in group))
            continue
        for s in group:
            try:
                cuts[s.id] = plan_cut(s, info.num_frames, info.fps, settings, path)
                kept.append(s)
            except DataError as err:
                where = f"{path} (segment {s.id}, {s.source})"
                failed[where] = PrepareFailure(where, "segment: " + str(err).removeprefix(f"{path}: "), (s.id,))
    return kept, cuts


def reparse_paths(text: AnnotationText, samples, new_annotation: Path, fmt: str, options) -> dict[str, Path]:
    """The path of each sample in the rewritten annotation, as the format's parser reads it (the same options)."""
    new_annotation.parent.mkdir(parents=True, exist_ok=True)
    draft = new_annotation.with_name(f".{new_annotation.name}.draft")
    draft.write_text(text.text([line_of(s) for s in samples]), encoding="utf-8")
    try:
        parsed = parse_annotations(draft, fmt, **options)
    finally:
        draft.unlink(missing_ok=True)
    return {s.id: Path(s.path) for s in parsed.samples}


def write_atomically(path: Path, text: str) -> None:
    part = path.with_name(path.name + PART_SUFFIX)
    part.write_text(text, encoding="utf-8")
    os.replace(part, path)
