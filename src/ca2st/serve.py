"""``ca2st serve``: a local web page (gradio, the optional extra ``ca2st[web]``) where anyone can try a model.

Upload a video or pick one of the examples: the page shows the top-k classes with their probabilities (verbs,
nouns and verb–noun actions for composition models), a timeline of sliding windows for a video longer than one
clip, and the B-CA attention maps where ``ca2st.explain`` is available. A broken or unsupported file gets the
text of the :class:`~ca2st.errors.Ca2stError` it raised, never a stack trace.

Without a checkpoint the page serves the CA²ST model that ``ca2st demo`` trained (:func:`find_demo`), with the
demo's class names and a few of its synthetic validation clips as examples.

:class:`VideoPage` does the work (model, class names, files) without gradio; :func:`build_app` lays it out as a
gradio page and :func:`launch` serves that. gradio is imported only there.
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import Ca2stError, CheckpointError, ConfigError, DataError
from .tasks import SINGLE
from .text import plural

log = logging.getLogger(__name__)

KEPT_REQUESTS = 16  # requests whose images stay in the work folder

DEMO_DIR = "runs/demo"  # where `ca2st demo` writes by default
DEMO_MODEL = "ca2st"  # the demo model the page serves: all three experts
MAX_EXAMPLES = 8
NO_MAPS = "B-CA maps are unavailable: this installation of ca2st has no `ca2st.explain`."
Progress = Callable[[float, str], None]


# --------------------------------------------------------------------------------------------- what to serve


@dataclass(frozen=True)
class DemoAssets:
    """The model ``ca2st demo`` trained and what goes with it: its class-name file and example clips."""

    checkpoint: Path
    labels: Path | None
    examples: list[Path]


def find_demo(demo_dir: str | Path = DEMO_DIR, model: str = DEMO_MODEL) -> DemoAssets:
    """The last checkpoint of the demo's ``model`` under ``demo_dir`` (``ca2st demo --out``), the synthetic
    dataset's ``classes.txt`` and up to :data:`MAX_EXAMPLES` validation clips (one per class first). The dataset
    is found where the model's run recorded it (``--cache``), else in ``demo_dir/data``. Raises
    :class:`~ca2st.errors.CheckpointError` saying to run ``ca2st demo`` when there is no trained model."""
    demo_dir = Path(demo_dir)
    run_dir = demo_dir / "models" / model
    checkpoints = sorted(run_dir.glob("checkpoint-*"))
    if not checkpoints:
        raise CheckpointError(
            f"{run_dir}: no trained demo model; run `ca2st demo --out {demo_dir}` first (a few minutes on a CPU), "
            "or serve a model of your own with --checkpoint PATH"
        )
    data = demo_dir / "data"
    run_config = run_dir / "run_config.json"
    if run_config.exists():
        root = json.loads(run_config.read_text()).get("data", {}).get("root")
        data = Path(root) if root else data
    labels = data / "classes.txt"
    videos = sorted((data / "videos").glob("val_*.mp4"))
    by_class: dict[str, list[Path]] = {}
    for video in videos:  # val_<label>_<k>.mp4
        by_class.setdefault(video.stem.split("_")[1], []).append(video)
    examples = [clips[0] for clips in by_class.values()][:MAX_EXAMPLES]
    return DemoAssets(checkpoints[-1], labels if labels.exists() else None, examples)


# --------------------------------------------------------------------------------------------- the work


@dataclass
class PageResult:
    """What the page shows for one video. ``labels``: panel title -> ``{name: probability}``; ``timeline``: the
    PNG of the windows (``None`` for a video of one clip); ``maps``: ``(image, caption)`` of the B-CA maps, with
    ``maps_note`` saying why there are none; ``message``: Markdown above the results (an error's text)."""

    message: str
    labels: dict[str, dict[str, float]] = field(default_factory=dict)
    timeline: Path | None = None
    maps: list[tuple[Path, str]] = field(default_factory=list)
    maps_note: str = ""

    @property
    def ok(self) -> bool:
        return bool(self.labels)


class VideoPage:
    """A model ready to answer the page: ``analyse(path)`` predicts (with a timeline when the video is longer
    than ``window`` seconds, by default one clip's span: frames × sampling rate at the video's frame rate) and
    writes its images under ``work_dir``, keeping the last :data:`KEPT_REQUESTS` requests' images (gradio has
    copied them to its own cache by then). A temporary ``work_dir`` (the default) is removed at exit."""

    def __init__(
        self,
        model,
        *,
        labels=None,
        examples=(),
        topk: int = 5,
        device: str = "cpu",
        work_dir: str | Path | None = None,
        title: str = "",
    ):
        if topk < 1:
            raise ConfigError(f"topk must be >= 1, got {topk}")
        self.model = model
        self.labels = labels
        self.examples = [Path(p) for p in examples]
        self.topk = int(topk)
        self.device = device
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="ca2st-serve-"))
        if work_dir is None:
            atexit.register(shutil.rmtree, self.work_dir, ignore_errors=True)
        self.title = title

    @property
    def panels(self) -> list[str]:
        """The titles of the label panels: ``classes``, or one per task (``verbs``, ``nouns``) and ``actions``."""
        tasks = list(self.model.tasks)
        if tasks == [SINGLE]:
            return ["classes"]
        return [f"{t}s" for t in tasks] + (["actions"] if {"verb", "noun"} <= set(tasks) else [])

    def clip_seconds(self, fps: float) -> float:
        """One clip's span in seconds at ``fps``: the recipe's frames × sampling rate."""
        recipe = self.model.input_recipe
        return recipe.num_frames * recipe.sampling_rate / fps

    def analyse(self, path, window: float | None = None, progress: Progress | None = None) -> PageResult:
        """Predict ``path`` and draw what the page shows; a :class:`~ca2st.errors.Ca2stError` becomes the result's
        message (any other failure is logged and reported without its trace)."""
        progress = progress or (lambda fraction, desc: None)
        name = Path(str(path)).name
        try:
            return self.run(Path(path), window, progress)
        except Ca2stError as err:
            log.info("%s: %s", name, err)
            return PageResult(
                message=f"**Could not {'read' if isinstance(err, DataError) else 'analyse'} {name}:** {err}"
            )
        except Exception:  # the page must answer; the server log has the trace
            log.exception("serve: %s failed", name)
            return PageResult(message=f"**Could not analyse {name}:** an unexpected error (see the server's log).")

    def run(self, path: Path, window: float | None, progress: Progress) -> PageResult:
        from .data.decode import probe
        from .prediction import predict

        progress(0.05, "reading the video")
        info = probe(path)
        duration = info.num_frames / info.fps if info.fps else info.duration
        window = window or (self.clip_seconds(info.fps) if info.fps else math.inf)
        long = duration > window + 1e-6
        progress(0.2, f"predicting over {duration:.1f} s" + (f" in windows of {window:.3g} s" if long else ""))
        pred = predict(
            self.model,
            path,
            labels=self.labels,
            topk=self.topk,
            window=window if long else None,
            stride=window / 2 if long else None,
            device=self.device,
            num_workers=0,
            progress=False,
        )
        out = self.request_dir()
        result = PageResult(message=self.describe(pred), labels=self.label_values(pred))
        if pred.has_timeline:
            progress(0.7, "drawing the timeline")
            result.timeline = pred.plot(out / f"{path.stem}_timeline.png", top=self.topk)
        progress(0.8, "B-CA maps")
        result.maps, result.maps_note = attention_maps(self.model, path, out / "maps")
        progress(1.0, "done")
        return result

    def request_dir(self) -> Path:
        """A new folder for one request's images; the oldest beyond the last :data:`KEPT_REQUESTS` are removed."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        done = sorted((p for p in self.work_dir.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime_ns)
        for old in done[: max(0, len(done) - KEPT_REQUESTS + 1)]:
            shutil.rmtree(old, ignore_errors=True)
        out = self.work_dir / uuid.uuid4().hex
        out.mkdir()
        return out

    def label_values(self, pred) -> dict[str, dict[str, float]]:
        """``{panel: {name: probability}}`` of the top-k per task (and the top verb–noun actions)."""
        values = {title: {e["name"]: e["prob"] for e in pred.top(t)} for title, t in zip(self.panels, pred.tasks)}
        if "actions" in self.panels:
            values["actions"] = {a["name"]: a["prob"] for a in pred.actions()}
        return values

    def describe(self, pred) -> str:
        """One line above the results: the file, its length, the views and the windows."""
        text = f"**{Path(pred.path).name}**: {pred.duration:.2f} s, {plural(pred.num_views, 'view')} per clip"
        if pred.has_timeline:
            windows = plural(pred.starts.shape[0], "window")
            text += f"; probabilities averaged over {windows} of {pred.window:.3g} s every {pred.stride:.3g} s"
        return text


def attention_maps(model, path: Path, out_dir: Path) -> tuple[list[tuple[Path, str]], str]:
    """The images ``ca2st.explain(model, path).save(out_dir)`` writes, captioned by name, and a note (why there are
    none). Without ``ca2st.explain`` (an older ca2st) the note says the maps are unavailable."""
    import ca2st

    if not hasattr(ca2st, "explain"):
        return [], NO_MAPS
    try:
        files = ca2st.explain(model, path).save(out_dir)
    except Ca2stError as err:
        return [], f"B-CA maps could not be drawn: {err}"
    except Exception:  # the labels and the timeline still show; the server log has the trace
        log.exception("serve: the B-CA maps of %s failed", path.name)
        return [], "B-CA maps could not be drawn: an unexpected error (see the server's log)."
    images = [(Path(p), name) for name, p in files.items() if Path(p).suffix.lower() in (".png", ".gif", ".jpg")]
    return images, "" if images else "ca2st.explain wrote no images for this model."


# --------------------------------------------------------------------------------------------- loading


def load_page(
    checkpoint: str | Path | None = None,
    *,
    demo_dir: str | Path = DEMO_DIR,
    labels=None,
    topk: int = 5,
    device: str = "auto",
) -> VideoPage:
    """The page of ``checkpoint`` (our folder or an official CAST file), or without one the demo's CA²ST model
    (:func:`find_demo`) with its class names and examples."""
    from .checkpoints import load_any
    from .engine.distributed import resolve_device

    examples: list[Path] = []
    if checkpoint is None:
        demo = find_demo(demo_dir)
        checkpoint, examples = demo.checkpoint, demo.examples
        labels = labels or demo.labels
    device = resolve_device(device)
    model = load_any(checkpoint).to(device)
    if labels is None and model.class_names is None:
        log.warning("%s has no class names; the page shows class numbers (give labels=...)", checkpoint)
    title = f"ca2st: {Path(checkpoint).parent.name}/{Path(checkpoint).name}"
    return VideoPage(model, labels=labels, examples=examples, topk=topk, device=device, title=title)


# --------------------------------------------------------------------------------------------- gradio


def import_gradio():
    """gradio, or a :class:`~ca2st.errors.ConfigError` saying how to install it (the ``web`` extra)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # a local page: nothing is sent anywhere
    try:
        import gradio
    except ImportError as err:
        raise ConfigError(f'ca2st serve needs gradio ({err}): pip install "ca2st[web]"') from err
    return gradio


def build_app(page: VideoPage):
    """The gradio page of ``page``: a file upload and examples in, label panels, a timeline image and the B-CA
    maps out, with progress while it works."""
    gr = import_gradio()

    with gr.Blocks(title="ca2st") as app:
        gr.Markdown(f"## {page.title or 'ca2st'}\nUpload a video (or pick an example) to see what the model reads.")
        with gr.Row():
            with gr.Column(scale=1):
                video = gr.File(label="video file", type="filepath", elem_id="video")
                window = gr.Number(
                    label="timeline window (s; 0: one clip)", value=0, minimum=0, precision=2, elem_id="window"
                )
                if page.examples:
                    gr.Examples([[str(p)] for p in page.examples], inputs=[video], label="examples")
            with gr.Column(scale=2):
                message = gr.Markdown(elem_id="message")
                with gr.Row():
                    panels = [
                        gr.Label(label=title, num_top_classes=page.topk, elem_id=f"labels-{title}")
                        for title in page.panels
                    ]
        timeline = gr.Image(label="timeline", type="filepath", visible=False, elem_id="timeline")
        with gr.Column(elem_id="maps-panel"):
            gr.Markdown("### B-CA attention maps")
            maps_note = gr.Markdown(elem_id="maps-note")
            maps = gr.Gallery(label="B-CA maps", visible=False, elem_id="maps", columns=3)

        def answer(path, seconds, progress=gr.Progress()):  # noqa: B008 (gradio finds the tracker by this default)
            if not path:
                return ("", *[None] * len(panels), gr.Image(value=None, visible=False), "", gr.Gallery(visible=False))
            result = page.analyse(path, window=seconds or None, progress=lambda f, d: progress(f, desc=d))
            return (
                result.message,
                *[result.labels.get(title) for title in page.panels],
                gr.Image(value=str(result.timeline) if result.timeline else None, visible=result.timeline is not None),
                result.maps_note,
                gr.Gallery(value=[(str(p), c) for p, c in result.maps] or None, visible=bool(result.maps)),
            )

        video.change(answer, [video, window], [message, *panels, timeline, maps_note, maps])
    return app


def launch(page: VideoPage, host: str = "127.0.0.1", port: int | None = None, block: bool = True) -> Any:
    """Serve ``page`` on ``host:port`` (never a public share link); ``block=False`` returns at once (tests).
    Returns the gradio app (``app.close()`` stops it)."""
    app = build_app(page)
    try:
        app.queue().launch(
            server_name=host,
            server_port=port,
            share=False,
            prevent_thread_lock=not block,
            allowed_paths=[str(page.work_dir), *{str(p.parent) for p in page.examples}],
            ssr_mode=False,
            quiet=not block,
        )
    except OSError as err:  # the port is taken, or the address is not this machine's
        raise ConfigError(f"cannot serve on {host}:{port or 'the default port'}: {err}; choose another --port") from err
    return app
