"""Command line: ``ca2st info``, ``train``, ``eval``, ``predict``, ``extract``, ``explain``, ``export``, ``report``,
``bench``, ``demo``, ``serve``, ``data check``, ``data prepare``."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from .engine.host_memory import keep_freed_memory
from .errors import Ca2stError

log = logging.getLogger(__name__)


def cmd_info(args) -> int:
    from .engine.config import parse_overrides
    from .models.registry import list_models
    from .models.summary import summarize
    from .text import plural

    names = list_models() if args.name == "all" else [args.name]
    for name in names:
        s = summarize(name, **parse_overrides(args.overrides))
        print(f"{s.name}")
        for kind, e in s.experts.items():
            special = f" + {plural(e.num_special, 'special token')}" if e.num_special else ""
            print(
                f"  expert {kind:<9} {e.arch}: {plural(e.grid[0], 'time slot')} x {plural(e.grid[1], 'position')}"
                f"{special}; {e.statistics}; weights {e.weights_license}"
            )
        for ex, layers in s.exchange_layers.items():
            print(f"  exchange {ex:<16} in {plural(layers, 'layer')}")
        print(f"  input            {', '.join(f'{k} {tuple(v)}' for k, v in s.input_shapes.items())}")
        print(
            f"  parameters       {s.total_params:,} total, {s.trainable_params:,} trainable "
            f"({s.trainable_params / 1e6:.2f}M)"
        )
        print(f"  forward          {s.gflops:.1f} GFLOPs per clip")
    return 0


def cmd_data_check(args) -> int:
    from .data.check import check_dataset
    from .text import plural

    options = dict(
        classes=args.classes,
        mapping=args.mapping,
        split=args.split,
        subset=args.subset,
        video_template=args.video_template,
        audio_template=args.audio_template,
        num_classes=args.num_classes,
    )
    report = check_dataset(
        args.annotation,
        args.root,
        format=args.format,
        audio=args.audio,
        audio_root=args.audio_root,
        fps=args.fps,
        min_short_side=args.min_short_side or None,
        min_duration=args.min_duration,
        segment_tolerance=args.segment_tolerance,
        silence_db=args.silence_db,
        audio_seconds=args.audio_seconds,
        decode=not args.no_decode,
        limit=args.limit,
        progress=not args.quiet,
        **options,
    )
    for problem in report.problems:
        print(problem)
    for note in report.notes[:10]:
        print(f"note: {note}")
    if len(report.notes) > 10:
        print(f"note: ... and {len(report.notes) - 10} more (all of them with --verbose)")
    for line in report.summary():
        print(line)
    missing = report.counts["missing"]
    if args.root is None and missing and 2 * missing >= report.num_files:
        print(
            f"hint: {plural(missing, 'file')} of {report.num_files} not found: the paths in {args.annotation} are "
            "relative to --root, and no --root was given"
        )
    return 0 if report.ok else 1


def cmd_data_prepare(args) -> int:
    from .data.prepare import PrepareSettings, prepare_dataset

    settings = PrepareSettings(
        short_side=args.short_side,
        fps=args.fps,
        crf=args.crf,
        preset=args.preset,
        audio=not args.no_audio,
        cut_segments=args.cut_segments,
        margin=args.margin,
    )
    report = prepare_dataset(
        args.annotation,
        args.root,
        args.out,
        format=args.format,
        settings=settings,
        output_annotation=args.annotation_out,
        workers=args.workers,
        progress=not args.quiet,
        classes=args.classes,
        split=args.split,
        num_classes=args.num_classes,
        video_template=args.video_template,
        use_frames=args.use_frames or None,
    )
    for failure in report.failures:
        print(failure)
    for line in report.summary():
        print(line)
    return 0 if report.ok or args.allow_failures else 1


def keep_freed_host_memory(device: str) -> None:
    """Fix glibc's allocator thresholds when training runs on the CPU (see :mod:`ca2st.engine.host_memory`)."""
    from .engine.distributed import resolve_device

    if resolve_device(device).type == "cpu":
        keep_freed_memory()


def cmd_train(args) -> int:
    from .engine.config import load_config
    from .engine.train import train

    config, overrides = split_config_arg(args.config, args.overrides)
    cfg = load_config(config, [*overrides, *exact_fp32_override(args)])
    keep_freed_host_memory(cfg.device)
    result = train(cfg)
    if int(os.environ.get("RANK", "0")) == 0:
        print(result.summary())
    return 0


EXACT_FP32_HELP = "IEEE fp32 matmuls on the GPU instead of TF32 (the default for fp32 work on Ampere and later)"


def exact_fp32_override(args) -> list[str]:
    """``--exact-fp32`` as the config override it stands for."""
    return ["exact_fp32=true"] if args.exact_fp32 else []


def split_config_arg(config: str | None, overrides: list[str]) -> tuple[str | None, list[str]]:
    """The optional YAML path may be left out: a first argument with '=' is an override."""
    if config is not None and "=" in config and not os.path.exists(config):
        return None, [config, *overrides]
    return config, list(overrides)


def cmd_eval(args) -> int:
    from .engine.config import load_config
    from .engine.runner import run_eval

    config, overrides = split_config_arg(args.config, args.overrides)
    result, files = run_eval(load_config(config, [*overrides, *exact_fp32_override(args)]), args.out)
    if int(os.environ.get("RANK", "0")) == 0:
        print(result.summary())
        for name, path in files.items():
            print(f"{name}: {path}")
    return 0


def cmd_demo(args) -> int:
    from .demo import format_table, run

    keep_freed_host_memory("auto")  # the demo trains on the default device
    results = run(args.out, args.cache)
    print(format_table(results))
    print(
        f"chance {100 * results['chance']:.1f}%; {results['seconds']:.0f} s; results in {args.out}/results.json, "
        f"plot in {args.out}/results.png"
    )
    return 0


PREDICT_TIMELINE_DIR = "runs/predict"  # where `predict --window` writes its files when no --out is given


def cmd_predict(args) -> int:
    from .checkpoints import load_any
    from .engine.config import parse_overrides
    from .engine.distributed import resolve_device
    from .precision import low_precision_dtype
    from .prediction import predict

    experts = parse_overrides(args.expert)
    device = resolve_device(args.device)
    heads = {"num_heads": args.num_heads} if args.num_heads else {}
    model = load_any(args.checkpoint, experts=experts, **heads).to(device)
    low = low_precision_dtype(args.precision)
    if low is not None:  # autocast would cast the weights on every call
        model.cast_matmul_weights_(low, trainable=True)
    result = predict(
        model,
        args.video,
        labels=args.labels,
        topk=args.topk,
        sampler=args.sampler,
        sampling_rate=args.sampling_rate,
        num_clips=args.clips,
        num_crops=args.crops,
        window=args.window,
        stride=args.stride,
        device=device,
        precision=args.precision,
        exact_fp32=args.exact_fp32,
        num_workers=args.workers,
        progress=not args.quiet,
    )
    print(result.summary())
    out = args.out or (PREDICT_TIMELINE_DIR if args.window else None)
    if out:
        for name, path in result.save(out).items():
            print(f"{name}: {path}")
    return 0


def cmd_extract(args) -> int:
    from .checkpoints import load_any
    from .engine.config import parse_overrides
    from .engine.distributed import resolve_device
    from .extraction import extract_features

    device = resolve_device(args.device)
    model = load_any(args.checkpoint, experts=parse_overrides(args.expert)).to(device)
    report = extract_features(
        model,
        args.source,
        args.out,
        window=args.window,
        stride=args.stride,
        num_clips=args.clips,
        features=[f.strip() for f in args.features.split(",") if f.strip()],
        tokens_dtype=args.tokens_dtype,
        root=args.root,
        format=args.format,
        annotation_options={"num_classes": args.num_classes, "classes": args.classes},
        device=device,
        precision=args.precision,
        batch_size=args.batch_size,
        num_workers=args.workers,
        progress=not args.quiet,
    )
    for video, reason in report.failures:
        print(f"failed: {video}: {reason}")
    for line in report.summary():
        print(line)
    return 0 if report.ok else 1


def cmd_serve(args) -> int:
    from .serve import import_gradio, launch, load_page

    import_gradio()  # before loading a model: say at once when the web extra is missing
    page = load_page(args.checkpoint, demo_dir=args.demo, labels=args.labels, topk=args.topk, device=args.device)
    print(f"serving {page.title}; gradio prints the address below (Ctrl+C stops it)")
    launch(page, host=args.host, port=args.port)
    return 0


def cmd_explain(args) -> int:
    from .checkpoints import load_any
    from .engine.distributed import resolve_device
    from .explanation import explain

    device = resolve_device(args.device)
    model = load_any(args.checkpoint).to(device)
    result = explain(model, args.video, layers=args.layers, per_head=args.per_head, device=device)
    print(result.summary())
    for name, path in result.save(args.out).items():
        print(f"{name}: {path}")
    return 0


def cmd_export(args) -> int:
    from .checkpoints import load_any
    from .engine.config import parse_overrides
    from .export import check_options, default_path, export_model, import_onnx

    check_options(args.format, args.batch, args.precision)
    if args.format == "onnx":
        import_onnx()  # before loading a model: say at once when the export extra is missing
    model = load_any(args.checkpoint, experts=parse_overrides(args.expert))
    out = args.out or default_path(args.checkpoint, args.format, args.batch, args.precision)
    result = export_model(model, out, format=args.format, batch=args.batch, precision=args.precision)
    print(result.summary())
    return 0


def cmd_report(args) -> int:
    from .engine.report import report

    table = report(args.results, columns=args.columns, rows=args.rows)
    print(table.summary())
    if args.out:
        table.to_csv(args.out)
        print(f"csv: {args.out}")
    return 0


def cmd_bench(args) -> int:
    from . import bench
    from .engine.distributed import resolve_device
    from .precision import fp32_matmul_policy

    if args.device == "auto":
        args.device = resolve_device("auto").type
    with fp32_matmul_policy(args.exact_fp32):
        return run_bench(args, bench)


def run_bench(args, bench) -> int:
    """``ca2st bench`` under its fp32 policy: one training step's figures (the subprocess mode) or the table."""
    import json

    if args.train_step_only:
        print(
            json.dumps(
                bench.train_step_stats(
                    args.model,
                    args.batch,
                    args.precision,
                    args.checkpointing,
                    args.steps,
                    args.device,
                    args.compile == "all",
                )
            )
        )
        return 0
    result = bench.run(args)
    print(bench.format_table(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ca2st", description="CAST / CAVA / CA²ST video recognition")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="print a model's structure, parameter counts and GFLOPs")
    info.add_argument("name", help="preset name (e.g. cast_b16), or 'all'")
    info.add_argument("overrides", nargs="*", help="model options as key=value, e.g. num_classes=174")
    info.set_defaults(func=cmd_info)

    train = sub.add_parser(
        "train",
        help="train a model from a YAML recipe (DDP under torchrun)",
        description="Train a recipe: ca2st train configs/cast_ek100.yaml data.batch_size=4 "
        "optim.epochs=10. Overrides are section.key=value.",
    )
    train.add_argument("config", nargs="?", help="YAML recipe (configs/*.yaml); omit to use only overrides")
    train.add_argument("overrides", nargs="*", help="section.key=value, e.g. optim.lr=5e-4 model.drop_path_rate=0.1")
    train.add_argument("--exact-fp32", action="store_true", help=EXACT_FP32_HELP + "; as exact_fp32=true")
    train.set_defaults(func=cmd_train)

    ev = sub.add_parser(
        "eval",
        help="evaluate a checkpoint with multi-view testing",
        description="ca2st eval configs/cast_ek100.yaml checkpoint=runs/cast_ek100/checkpoint-best "
        "(our checkpoint directory, or an official CAST checkpoint file).",
    )
    ev.add_argument("config", nargs="?", help="YAML recipe; its data.val is evaluated")
    ev.add_argument("overrides", nargs="*", help="section.key=value; checkpoint=PATH is required")
    ev.add_argument(
        "--out", help="folder for results.json, per-class CSV and confusion plot (default: OUTPUT_DIR/eval)"
    )
    ev.add_argument("--exact-fp32", action="store_true", help=EXACT_FP32_HELP + "; as exact_fp32=true")
    ev.set_defaults(func=cmd_eval)

    pr = sub.add_parser(
        "predict",
        help="top-k classes of a video, or a timeline over a long one",
        description="ca2st predict clip.mp4 --checkpoint runs/x/checkpoint-best --labels classes.txt; "
        "--window 4 --stride 2 slides over a long video and writes a JSON/CSV timeline "
        "and a PNG plot.",
    )
    pr.add_argument("video")
    pr.add_argument("--checkpoint", required=True, help="our checkpoint directory, or an official CAST checkpoint")
    pr.add_argument("--labels", help="class names: one per line, or a JSON list / dict (default: the checkpoint's)")
    pr.add_argument("--topk", type=int, default=5)
    pr.add_argument("--window", type=float, help="window length in seconds (sliding-window timeline)")
    pr.add_argument("--stride", type=float, help="window stride in seconds (default: the window)")
    pr.add_argument(
        "--sampler",
        choices=("dense", "segment"),
        help="frame sampling: dense stride (Kinetics-like) or segment (SSV2/EK100); default: the checkpoint's recipe",
    )
    pr.add_argument("--sampling-rate", type=int, help="dense stride (default: the checkpoint's recipe)")
    pr.add_argument("--clips", type=int, help="temporal views per window (default: the checkpoint's recipe)")
    pr.add_argument("--crops", type=int, help="spatial views, 1 or 3 (default: the checkpoint's recipe)")
    pr.add_argument(
        "--expert",
        nargs="*",
        default=[],
        help="expert weights, e.g. spatial=ViT-B-16.pt (default: the paths the checkpoint recorded)",
    )
    pr.add_argument("--num-heads", type=int, help="heads of an official CAST checkpoint (default 12)")
    pr.add_argument("--device", default="auto")
    pr.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"), help="fp16 on GPUs only")
    pr.add_argument("--exact-fp32", action="store_true", help=EXACT_FP32_HELP)
    pr.add_argument(
        "--workers", type=int, help="loader processes decoding the windows (default: up to 4; none for one window)"
    )
    pr.add_argument(
        "--out",
        help="folder for <video>.json, <video>.csv and, with --window, <video>_timeline.png (default: none "
        f"written without --window, {PREDICT_TIMELINE_DIR} with it)",
    )
    pr.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    pr.set_defaults(func=cmd_predict)

    xt = sub.add_parser(
        "extract",
        help="per-window features of every expert and the fused head input, one safetensors file per video",
        description="ca2st extract videos/ --checkpoint runs/x/checkpoint-best --out feats --window 2 --stride 1: "
        "OUT/<video>.safetensors (each expert's pooled feature, 'fused', with --features tokens each expert's "
        "'tokens.<expert>', 'starts', 'ends') and OUT/index.jsonl. Each batch of a video's windows is decoded in "
        "one pass. Finished videos are skipped; under torchrun the processes split the videos. Broken videos are "
        "named and counted; the exit status is then 1.",
    )
    xt.add_argument("source", help="a folder of videos, a video file, or an annotation file")
    xt.add_argument("--checkpoint", required=True, help="our checkpoint directory, or an official CAST checkpoint")
    xt.add_argument("--out", required=True, help="output folder")
    xt.add_argument("--window", type=float, help="window length in seconds (default: one window per video)")
    xt.add_argument("--stride", type=float, help="window stride in seconds (default: the window)")
    xt.add_argument("--clips", type=int, help="temporal views per window, features averaged (default 1)")
    xt.add_argument(
        "--features",
        default="pooled,fused",
        help="comma-separated: pooled, fused, tokens (each expert's final token stream; large) (default: pooled,fused)",
    )
    xt.add_argument("--tokens-dtype", default="float16", choices=("float16", "float32"), help="how tokens are stored")
    xt.add_argument("--root", help="folder the annotation's video paths are relative to (default: its folder)")
    xt.add_argument("--format", help="annotation format (guessed when omitted)")
    xt.add_argument("--classes", help="class-map file for the format's parser (Kinetics, VGG-Sound, ...)")
    xt.add_argument("--num-classes", type=int, help="class count for the path_label format")
    xt.add_argument(
        "--expert",
        nargs="*",
        default=[],
        help="expert weights, e.g. spatial=ViT-B-16.pt (default: the paths the checkpoint recorded)",
    )
    xt.add_argument("--device", default="auto")
    xt.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"), help="fp16 on GPUs only")
    xt.add_argument(
        "--batch-size", type=int, default=8, help="windows per forward pass and per decoding pass (default 8)"
    )
    xt.add_argument("--workers", type=int, help="loader processes, each reading whole videos (default: up to 4)")
    xt.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    xt.set_defaults(func=cmd_extract)

    ex = sub.add_parser(
        "explain",
        help="B-CA attention maps and attention rollout of a model on one clip",
        description="ca2st explain clip.mp4 --checkpoint runs/x/checkpoint-best --layers 0 11 --out maps: the "
        "exchanges' attention (T2S, S2T and the audio exchanges) per layer and the rollout through the experts, "
        "from the model's own forward on the input recipe's first view, as PNG grids over the frames, an "
        "animated GIF, spectrogram overlays and a safetensors file.",
    )
    ex.add_argument("video")
    ex.add_argument("--checkpoint", required=True, help="our checkpoint directory, or an official CAST checkpoint")
    ex.add_argument("--layers", type=int, nargs="+", help="layers whose exchanges are shown (default: all)")
    ex.add_argument("--per-head", action="store_true", help="keep every head's map in the tensor file")
    ex.add_argument("--out", default="explain", help="folder for the pictures and the tensor file (default: explain)")
    ex.add_argument("--device", default="auto")
    ex.set_defaults(func=cmd_explain)

    xp = sub.add_parser(
        "export",
        help="write a model as a fixed-shape ONNX or TorchScript file, checked against PyTorch",
        description="ca2st export --checkpoint runs/x/checkpoint-best --format onnx: the whole model (video, and "
        "audio for audio models, in; the logits, one output per task, out) at a fixed batch size, then run on a "
        "random input (onnxruntime on CPU, or torch.jit.load) and compared with the PyTorch model; the command "
        "prints the largest difference and fails when it is above the precision's tolerance.",
    )
    xp.add_argument("--checkpoint", required=True, help="our checkpoint directory, or an official CAST checkpoint")
    xp.add_argument("--format", choices=["onnx", "torchscript"], default="onnx")
    xp.add_argument(
        "--expert",
        nargs="*",
        default=[],
        help="expert weights, e.g. spatial=ViT-B-16.pt (default: the paths the checkpoint recorded)",
    )
    xp.add_argument("--batch", type=int, default=1, help="the graph's fixed batch size (default 1)")
    xp.add_argument(
        "--precision",
        choices=["fp32", "fp16"],
        default="fp32",
        help="fp16: float16 matrix products and convolutions, float32 inputs and outputs (default fp32)",
    )
    xp.add_argument("--out", help="the file to write (default: next to the checkpoint, named after it and the options)")
    xp.set_defaults(func=cmd_export)

    rp = sub.add_parser(
        "report",
        help="combine results.json files of any runs into the papers' balanced table",
        description="One row per run (the run's name, else its model and, where two runs of one "
        "model meet on a dataset, its folder), one column per dataset.",
    )
    rp.add_argument("results", nargs="+", help="results.json files (or the folders holding them)")
    rp.add_argument(
        "--columns",
        "--names",
        dest="columns",
        nargs="*",
        help="dataset (column) name of each result (default: its dataset field)",
    )
    rp.add_argument("--rows", nargs="*", help="row name of each result (default: its run field)")
    rp.add_argument("--out", help="write the table as CSV")
    rp.set_defaults(func=cmd_report)

    demo = sub.add_parser(
        "demo",
        help="the embedded default: synthetic audio-visual data, tiny experts, "
        "CAST / CAVA / CA²ST against single experts (a few minutes on a CPU)",
    )
    demo.add_argument("--out", default="runs/demo", help="output folder (results.json, results.md, results.png)")
    demo.add_argument("--cache", help="folder for the generated videos (default: OUT/data; reused when present)")
    demo.set_defaults(func=cmd_demo)

    sv = sub.add_parser(
        "serve",
        help="a local web page to try a model: top-k classes, timeline, B-CA maps (needs ca2st[web])",
        description="ca2st serve --checkpoint runs/x/checkpoint-best; without --checkpoint it serves the CA²ST "
        "model `ca2st demo` trained, with the demo's synthetic clips as examples. Local only: no share link.",
    )
    sv.add_argument(
        "--checkpoint", help="our checkpoint directory, or an official CAST checkpoint (default: the demo's)"
    )
    sv.add_argument("--demo", default="runs/demo", help="the `ca2st demo --out` folder to serve without --checkpoint")
    sv.add_argument("--labels", help="class names: one per line, or a JSON list / dict (default: the checkpoint's)")
    sv.add_argument("--topk", type=int, default=5)
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    sv.add_argument("--port", type=int, help="port (default: 7860, or the next free one)")
    sv.add_argument("--device", default="auto")
    sv.set_defaults(func=cmd_serve)

    bench = sub.add_parser(
        "bench",
        help="forward and training-step speed and memory, as ratios to the machine's "
        "matmul ceiling (see benchmarks/bench_model.py)",
    )
    bench.add_argument(
        "--model", default="cast_b16", help="preset to measure (default cast_b16; `ca2st info all` lists them)"
    )
    bench.add_argument("--batch", type=int, default=1, help="clips per forward and per training step (default 1)")
    bench.add_argument("--runs", type=int, default=10, help="timed forward runs after warm-up (at least 5)")
    bench.add_argument(
        "--steps", type=int, default=5, help="timed training steps after two warm-up steps (the best counts)"
    )
    bench.add_argument("--device", default="auto", help="cpu, cuda, or auto: cuda when available (default)")
    bench.add_argument(
        "--compile",
        choices=("none", "forward", "all"),
        default="forward",
        help="torch.compile: 'forward' measures the forward eager and compiled (default), 'all' "
        "also compiles the training steps (ratios against the compiled forward)",
    )
    bench.add_argument("--skip-train", action="store_true", help="forward figures only")
    bench.add_argument(
        "--precisions", nargs="+", choices=("fp32", "bf16"), default=["fp32", "bf16"], help="what to measure"
    )
    bench.add_argument("--exact-fp32", action="store_true", help=EXACT_FP32_HELP)
    bench.add_argument("--json", help="write the figures to this file")
    bench.add_argument("--train-step-only", action="store_true", help=argparse.SUPPRESS)
    bench.add_argument("--precision", default="fp32", choices=("fp32", "bf16"), help=argparse.SUPPRESS)
    bench.add_argument("--checkpointing", action="store_true", help=argparse.SUPPRESS)
    bench.set_defaults(func=cmd_bench)

    data = sub.add_parser("data", help="dataset tools")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    check = data_sub.add_parser(
        "check",
        help="scan the videos of an annotation file and report missing, broken or unusual files",
        description="Probe every video an annotation file names (and decode its first and last frame); report "
        "missing and undecodable files, missing or silent audio (--audio), frame rate, duration, short side, "
        "segments outside their video or ending past it, and note frame counts that disagree with the header "
        "and rotated (phone) videos. Exit status 1 if anything is wrong, 2 if the annotation file "
        "itself is malformed.",
    )
    check.add_argument("annotation", help="annotation file (CSV, list or JSON)")
    check.add_argument("--root", help="folder the video paths are relative to")
    check.add_argument(
        "--format",
        help="annotation format (guessed when omitted): cast_ek100, cast_ssv2, cast_k400, "
        "path_label, epic100, ssv2, kinetics, kinetics_sound, ucf101, vggsound, "
        "epic_sounds, hd_epic, hd_epic_sounds, activitynet",
    )
    check.add_argument(
        "--audio", action="store_true", help="require an audio track that is not silent (audio-visual models)"
    )
    check.add_argument(
        "--silence-db",
        type=float,
        default=-60.0,
        help="with --audio: report tracks whose RMS level is below this, in dBFS (default -60)",
    )
    check.add_argument(
        "--audio-seconds",
        type=float,
        default=30.0,
        help="with --audio: seconds of each track decoded to measure its level (default 30)",
    )
    check.add_argument("--audio-root", help="folder of separate audio files (default: --root)")
    check.add_argument("--classes", help="class-map file (SSV2 labels.json, Kinetics/VGG-Sound class list, ...)")
    check.add_argument("--mapping", help="class-mapping CSV (HD-EPIC to EPIC-KITCHENS-100 classes)")
    check.add_argument("--split", help="VGG-Sound split to keep (train/test)")
    check.add_argument("--subset", help="ActivityNet subset to keep (training/validation)")
    check.add_argument("--num-classes", type=int, help="class count for the path_label format")
    check.add_argument("--video-template", help="video path template, e.g. '{participant_id}/videos/{video_id}.MP4'")
    check.add_argument("--audio-template", help="separate audio path template, e.g. '{id}.wav'")
    check.add_argument("--fps", type=float, help="expected frame rate (1%% tolerance)")
    check.add_argument("--min-short-side", type=int, default=224, help="smallest acceptable short side (0: any)")
    check.add_argument("--min-duration", type=float, help="shortest acceptable video, in seconds")
    check.add_argument(
        "--segment-tolerance",
        type=float,
        default=0.5,
        help="report segments ending more than this many seconds past their video's end (default 0.5)",
    )
    check.add_argument("--limit", type=int, help="check only the first N files")
    check.add_argument("--no-decode", action="store_true", help="probe only; do not decode the first/last frames")
    check.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    check.set_defaults(func=cmd_data_check)

    prep = data_sub.add_parser(
        "prepare",
        help="re-encode a dataset to a short side (and frame rate), cutting annotated segments into clips",
        description="Re-encode every video of an annotation file into --out (H.264 in MP4, short side --short-side "
        "or smaller, the source's frame rate unless --fps, audio kept as AAC) and write the annotation file in the "
        "same format pointing at the outputs. --cut-segments makes one clip per EPIC-KITCHENS segment. Finished "
        "files are skipped, so an interrupted run continues where it stopped. Samples whose file fails are named, "
        "counted and left out of the new annotation; the exit status is then 1 (0 with --allow-failures), and 2 "
        "when the annotation file or the options are wrong.",
    )
    prep.add_argument("annotation", help="annotation file (path_label-style list, CAST list or EPIC_100_*.csv)")
    prep.add_argument("--root", help="folder the video paths are relative to")
    prep.add_argument("--out", required=True, help="output folder (the same relative layout as --root)")
    prep.add_argument("--annotation-out", help="the new annotation file (default: OUT/<annotation's name>)")
    prep.add_argument(
        "--format",
        help="annotation format (guessed when omitted): path_label, cast_ssv2, cast_k400, ucf101, cast_ek100, "
        "kinetics, kinetics_sound, vggsound, epic100",
    )
    prep.add_argument("--short-side", type=int, default=256, help="scale the short side down to this (default 256)")
    prep.add_argument("--fps", type=float, help="output frame rate (default: each source's)")
    prep.add_argument("--crf", type=int, default=23, help="libx264 quality, 0-51, lower is better (default 23)")
    prep.add_argument("--preset", default="medium", help="libx264 speed preset (default medium)")
    prep.add_argument("--no-audio", action="store_true", help="drop the audio track")
    prep.add_argument("--cut-segments", action="store_true", help="one clip per annotated segment (EPIC-KITCHENS)")
    prep.add_argument("--margin", type=float, default=0.0, help="with --cut-segments: seconds of context each side")
    prep.add_argument("--workers", type=int, help="processes (default: the CPU count, at most 4)")
    prep.add_argument("--allow-failures", action="store_true", help="exit 0 even when some files failed")
    prep.add_argument("--classes", help="class-map file for the format's parser (Kinetics, VGG-Sound, ...)")
    prep.add_argument("--split", help="VGG-Sound split to keep (train/test)")
    prep.add_argument("--num-classes", type=int, help="class count for the path_label format")
    prep.add_argument("--video-template", help="video path template, e.g. '{participant_id}/videos/{video_id}.MP4'")
    prep.add_argument("--use-frames", action="store_true", help="EPIC: segments from start_frame/stop_frame")
    prep.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    prep.set_defaults(func=cmd_data_prepare)
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
