"""data/prepare.py and ``ca2st data prepare``: re-encoded files hold exactly the frames (and sound) they should,
the new annotation parses and trains, runs resume, failures are named and counted.

The media are index-coded (``media.index_frame``: each frame spells its own index), so a cut is checked frame by
frame; the sources are drawn at twice the size and prepared to a short side of 64, which brings the digit blocks
back to the size ``media.frame_index`` reads."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from odd_media import rotated_video

import media
from ca2st.cli import main
from ca2st.data.datasets import parse_annotations, parse_timestamp
from ca2st.data.decode import display_rotation, probe, read_audio, read_frames
from ca2st.data.prepare import PrepareSettings, format_timestamp, output_size, prepare_dataset
from ca2st.data.sampling import frame_range
from ca2st.engine.data import build_dataset
from ca2st.engine.train import train
from ca2st.errors import ConfigError
from media import frame_index, index_frame

from helpers import smoke_config

FPS, RATE, SWITCH = 25, 48000, 2.0  # the untrimmed video's frame and sample rates; its tone starts at 2 s
FAST = dict(preset="ultrafast", crf=10)
EPIC_HEADER = (
    "participant_id,video_id,narration_id,narration_timestamp,start_timestamp,stop_timestamp,start_frame,"
    "stop_frame,narration,verb,verb_class,noun,noun_class,all_nouns,all_noun_classes"
)
# narration id, start, stop, and the source frames frame_range gives them at 25 fps ([first, stop))
SEGMENTS = [
    ("P01_01_0", "00:00:00.50", "00:00:01.30", 13, 33),
    ("P01_01_1", "00:00:01.80", "00:00:02.60", 45, 65),  # the tone starts 0.2 s into it
    ("P01_01_2", "00:00:01.00", "00:00:01.40", 25, 35),  # overlaps the first
]


def make_video(path: Path, num_frames: int, *, scale: int = 2, fps: int = FPS, audio: bool = True) -> Path:
    """An index-coded H.264 mp4 at ``scale`` times media's 64x96, with a stereo AAC track that is silent before
    ``SWITCH`` seconds and a 440 Hz tone after."""
    path.parent.mkdir(parents=True, exist_ok=True)
    big = np.ones((scale, scale, 1), np.uint8)
    with av.open(str(path), "w", format="mp4") as out:
        vs = out.add_stream("libx264", rate=fps, options={"crf": "8", "preset": "ultrafast", "g": "12", "bf": "2"})
        vs.height, vs.width = 64 * scale, 96 * scale
        vs.pix_fmt = "yuv420p"
        if audio:
            sound = out.add_stream("aac", rate=RATE)
            sound.layout = "stereo"
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(np.kron(index_frame(i), big), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            out.mux(vs.encode(frame))
        out.mux(vs.encode(None))
        if audio:
            t = np.arange(int(num_frames / fps * RATE)) / RATE
            wave = np.where(t >= SWITCH, 0.5 * np.sin(2 * np.pi * 440 * t), 0.0).astype(np.float32)
            for k in range(0, len(t), 1024):
                chunk = np.ascontiguousarray(np.stack([wave[k : k + 1024]] * 2))
                af = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
                af.sample_rate, af.pts, af.time_base = RATE, k, Fraction(1, RATE)
                out.mux(sound.encode(af))
            out.mux(sound.encode(None))
    return path


def epic_row(nid: str, start: str, stop: str, first: int, last: int) -> str:
    return f'P01,P01_01,{nid},00:00:00.00,{start},{stop},{first + 1},{last},"open, tap",open,3,tap,12,"[\'tap\']",[12]'


@pytest.fixture(scope="module")
def untrimmed(tmp_path_factory) -> Path:
    """An EPIC-style dataset: one untrimmed 4 s video (100 frames, 128x192, audio) and a CSV of 3 segments."""
    root = tmp_path_factory.mktemp("epic")
    make_video(root / "P01" / "videos" / "P01_01.MP4", 100)
    (root / "train.csv").write_text("\n".join([EPIC_HEADER, *(epic_row(*s) for s in SEGMENTS)]) + "\n")
    return root


@pytest.fixture(scope="module")
def cut(untrimmed, tmp_path_factory) -> tuple[Path, object]:
    """The segments cut into clips at a short side of 64 (the fixture's output folder and report)."""
    out = tmp_path_factory.mktemp("epic_prepared")
    settings = PrepareSettings(short_side=64, cut_segments=True, **FAST)
    report = prepare_dataset(untrimmed / "train.csv", untrimmed, out, settings=settings, workers=2, progress=False)
    return out, report


def indices(path: Path) -> list[int]:
    """The index every frame of ``path`` spells."""
    return [frame_index(f.numpy()) for f in read_frames(path, range(probe(path).num_frames))]


def test_output_size_scales_the_short_side_down_only_and_keeps_sides_even():
    assert output_size(1920, 1080, 256) == (456, 256)  # EPIC-KITCHENS' 456x256
    assert output_size(1080, 1920, 256) == (256, 456)  # portrait
    assert output_size(320, 240, 256) == (320, 240)  # never upscaled
    assert output_size(341, 193, 256) == (340, 192)  # odd sides: rounded down to even for yuv420p
    assert output_size(192, 128, 64) == (96, 64)


def test_timestamps_are_written_at_or_below_the_frame_boundary():
    assert format_timestamp(0) == "00:00:00.00"
    assert format_timestamp(3725.5) == "01:02:05.50"
    for n, fps in [(13, 25.0), (7, 30000 / 1001), (1001, 59.94), (3, 12.5)]:
        text = format_timestamp(n / fps)
        assert frame_range(10**6, fps, parse_timestamp(text))[0] == n  # parses back to frame n


def test_cut_segments_hold_exactly_their_frames_at_the_short_side(cut):
    out, report = cut
    assert report.ok and (report.prepared, report.encoded, report.skipped) == (3, 3, 0)
    for nid, _, _, first, stop in SEGMENTS:
        path = out / "P01" / "videos" / f"{nid}.MP4"
        info = probe(path)
        assert (info.width, info.height, info.fps, info.codec) == (96, 64, FPS, "h264")
        assert indices(path) == list(range(first, stop))  # the cut starts and ends on the right frame


def test_cut_clips_keep_the_sound_in_step_with_the_frames(cut):
    out, _ = cut
    wave = read_audio(out / "P01" / "videos" / "P01_01_1.MP4", sample_rate=16000).numpy()
    assert 0.8 <= len(wave) / 16000 < 0.85  # the segment's 0.8 s (AAC pads its last frame)
    onset = np.argmax(np.abs(wave) > 0.1) / 16000
    assert onset == pytest.approx(SWITCH - 1.8, abs=0.005)  # the tone starts 0.2 s in, as in the source
    assert probe(out / "P01" / "videos" / "P01_01_1.MP4").audio_channels == 2


def test_the_new_epic_csv_keeps_every_column_and_points_at_the_clips(untrimmed, cut):
    out, report = cut
    new = out / "train.csv"
    assert report.output_annotation == str(new)
    lines = new.read_text().splitlines()
    assert lines[0] == EPIC_HEADER
    assert (
        lines[1]
        == "P01,P01_01_0,P01_01_0,00:00:00.00,00:00:00.00,00:00:00.80,1,20,\"open, tap\",open,3,tap,12,['tap'],[12]"
    )
    for use_frames in (False, True):
        ann = parse_annotations(new, "epic100", use_frames=use_frames)
        assert [s.id for s in ann] == [s[0] for s in SEGMENTS]
        for sample, (_, _, _, first, stop) in zip(ann, SEGMENTS):
            info = probe(out / sample.path)
            assert frame_range(info.num_frames, info.fps, sample.start, sample.end, unit=sample.unit) == (
                0,
                stop - first,
            )
            assert sample.label == {"verb": 3, "noun": 12}


def test_a_margin_keeps_context_and_the_annotation_marks_the_segment(untrimmed, tmp_path):
    settings = PrepareSettings(short_side=64, cut_segments=True, margin=0.2, **FAST)
    report = prepare_dataset(untrimmed / "train.csv", untrimmed, tmp_path, settings=settings, workers=1, progress=False)
    assert report.ok
    for sample, (_, _, _, first, stop) in zip(parse_annotations(tmp_path / "train.csv"), SEGMENTS):
        path = tmp_path / sample.path
        info = probe(path)
        a, n = frame_range(info.num_frames, info.fps, sample.start, sample.end)
        assert indices(path) == list(range(first - 5, stop + 5))  # 0.2 s = 5 frames of context each side
        assert (a, n) == (5, stop - first)  # the annotated segment inside the clip


def test_a_lower_frame_rate_shows_the_frame_on_screen_at_each_time(untrimmed, tmp_path):
    settings = PrepareSettings(short_side=64, fps=12.5, cut_segments=True, **FAST)
    prepare_dataset(untrimmed / "train.csv", untrimmed, tmp_path, settings=settings, workers=1, progress=False)
    path = tmp_path / "P01" / "videos" / "P01_01_0.MP4"
    assert probe(path).fps == 12.5
    assert indices(path) == list(range(13, 33, 2))
    rows = (tmp_path / "train.csv").read_text().splitlines()
    assert rows[1].split(",")[4:8] == ["00:00:00.00", "00:00:00.80", "1", "10"]  # frames at 12.5 fps


def test_uncut_videos_keep_their_times_and_get_frame_numbers_at_the_new_rate(untrimmed, tmp_path):
    settings = PrepareSettings(short_side=64, fps=12.5, **FAST)
    report = prepare_dataset(untrimmed / "train.csv", untrimmed, tmp_path, settings=settings, progress=False)
    assert (report.prepared, report.encoded) == (3, 1)  # one video for the three segments
    path = tmp_path / "P01" / "videos" / "P01_01.MP4"
    assert indices(path) == list(range(0, 100, 2)) and probe(path).fps == 12.5
    rows = [r.split(",") for r in (tmp_path / "train.csv").read_text().splitlines()[1:]]
    assert [r[1] for r in rows] == ["P01_01"] * 3
    assert [r[4:8] for r in rows][0] == ["00:00:00.50", "00:00:01.30", "8", "17"]  # frames 7..16 at 12.5 fps
    by_time, by_frame = (parse_annotations(tmp_path / "train.csv", use_frames=f) for f in (False, True))
    for a, b in zip(by_time, by_frame):
        assert frame_range(50, 12.5, a.start, a.end) == frame_range(50, 12.5, b.start, b.end, unit="frames")


def test_a_ucf101_list_gets_its_class_file_beside_it(tmp_path):
    src = tmp_path / "src"
    make_video(src / "Typing" / "v_Typing_g01_c01.avi", 10, scale=1, audio=False)  # MP4 inside; the name counts
    (src / "classInd.txt").write_text("1 Knitting\n2 Typing\n")
    (src / "testlist01.txt").write_text("Typing/v_Typing_g01_c01.avi\n")
    report = run_list(src, tmp_path / "out", annotation="testlist01.txt", format="ucf101")
    assert report.ok and (tmp_path / "out" / "testlist01.txt").read_text() == "Typing/v_Typing_g01_c01.mp4\n"
    (sample,) = parse_annotations(tmp_path / "out" / "testlist01.txt")  # finds classInd.txt beside it
    assert sample.label == 1 and (tmp_path / "out" / sample.path).is_file()


def test_mpeg4_in_matroska_with_pcm_at_an_odd_rate_is_cut_too(tmp_path):
    # PCM in Matroska declares '2 channels' (no layout), and AAC has no 22 kHz: both must still encode
    media.make_video(tmp_path / "v.mkv", "mkv-mpeg4", 50, audio=media.tone([440, 660], 2.0, 22000), audio_rate=22000)
    header = "participant_id,video_id,narration_id,start_timestamp,stop_timestamp,verb_class,noun_class"
    (tmp_path / "a.csv").write_text(f"{header}\nP,v,n0,00:00:00.40,00:00:01.00,1,2\n")
    settings = PrepareSettings(cut_segments=True, **FAST)
    template = "{video_id}.mkv"
    report = prepare_dataset(
        tmp_path / "a.csv", tmp_path, tmp_path / "out", settings=settings, progress=False, video_template=template
    )
    assert report.ok, report.failures
    out = tmp_path / "out" / "n0.mkv"  # the template's name (MP4 inside)
    assert indices(out) == list(range(10, 25))
    info = probe(out)
    assert (info.audio_codec, info.audio_channels, info.audio_sample_rate) == ("aac", 2, 48000)
    assert 0.6 <= len(read_audio(out, sample_rate=16000)) / 16000 < 0.65


def test_a_truncated_video_gives_its_early_segments_and_names_the_late_one(tmp_path):
    path = media.make_video(tmp_path / "v.mkv", "mkv", 100)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    header = "participant_id,video_id,narration_id,start_timestamp,stop_timestamp,verb_class,noun_class"
    rows = ["P,v,early,00:00:00.20,00:00:00.40,1,2", "P,v,late,00:00:03.20,00:00:03.60,1,2"]
    (tmp_path / "a.csv").write_text("\n".join([header, *rows]) + "\n")
    settings = PrepareSettings(cut_segments=True, **FAST)
    report = prepare_dataset(
        tmp_path / "a.csv",
        tmp_path,
        tmp_path / "out",
        settings=settings,
        progress=False,
        video_template="{video_id}.mkv",
    )
    assert report.prepared == 1 and indices(tmp_path / "out" / "early.mkv") == list(range(5, 10))
    (failure,) = report.failures
    assert "segment late" in failure.path and failure.samples == ("late",)
    assert (tmp_path / "out" / "a.csv").read_text().splitlines()[1].startswith("P,early,early,")


@pytest.fixture
def short_videos(tmp_path) -> Path:
    """A path_label list of two 1 s videos: 128x192 in mkv (to be scaled) and 64x96 (smaller: kept as it is)."""
    root = tmp_path / "src"
    make_video(root / "a" / "big.mkv", 25)
    make_video(root / "b" / "small.mp4", 25, scale=1)
    (root / "list.txt").write_text("a/big.mkv 3\nb/small.mp4 5\n")
    return root


def run_list(root: Path, out: Path, workers: int = 1, annotation="list.txt", format="path_label", **kw):
    settings = PrepareSettings(short_side=kw.pop("short_side", 80), **FAST, **kw)
    options = {"num_classes": 8} if format == "path_label" else {}
    return prepare_dataset(
        root / annotation, root, out, format=format, settings=settings, workers=workers, progress=False, **options
    )


def test_a_path_label_list_is_scaled_and_rewritten(short_videos, tmp_path):
    report = run_list(short_videos, tmp_path / "out")
    assert report.ok and report.encoded == 2
    new = tmp_path / "out" / "list.txt"
    assert new.read_text() == "a/big.mp4 3\nb/small.mp4 5\n"
    ann = parse_annotations(new, "path_label", num_classes=8)
    big, small = (probe(tmp_path / "out" / s.path) for s in ann)
    assert (big.width, big.height, big.num_frames, big.fps) == (120, 80, 25, FPS)
    assert (small.width, small.height, small.num_frames) == (96, 64, 25)  # smaller than the short side: kept
    assert indices(tmp_path / "out" / "b" / "small.mp4") == list(range(25))
    # a whole file's AAC track is copied: the same samples
    source, copy = (
        read_audio(p, sample_rate=RATE) for p in (short_videos / "b/small.mp4", tmp_path / "out/b/small.mp4")
    )
    assert source.shape == copy.shape and float((source - copy).abs().max()) == 0.0


def test_a_phone_video_is_written_upright(tmp_path):
    (tmp_path / "src").mkdir()
    rotated_video(tmp_path / "src" / "phone.mp4", 90, 10)
    (tmp_path / "src" / "list.txt").write_text("phone.mp4 0\n")
    report = run_list(tmp_path / "src", tmp_path / "out")
    assert report.ok
    out = tmp_path / "out" / "phone.mp4"
    info = probe(out)
    assert (info.width, info.height) == (64, 96) and display_rotation(out) == 0  # turned, no display matrix left
    frames = read_frames(out, range(10)).numpy()
    assert [frame_index(np.rot90(f, -1)) for f in frames] == list(range(10))


def test_a_kinetics_csv_keeps_its_rows_and_names(tmp_path):
    src = tmp_path / "src"
    make_video(src / "abc_000010_000020.mp4", 10, scale=1)
    (src / "classes.txt").write_text("dancing\nsinging\n")
    text = "label,youtube_id,time_start,time_end,split\nsinging,abc,10,20,train\n"
    (src / "train.csv").write_text(text)
    settings = PrepareSettings(short_side=32, **FAST)
    report = prepare_dataset(
        src / "train.csv", src, tmp_path / "out", settings=settings, classes=str(src / "classes.txt")
    )
    assert report.ok and (tmp_path / "out" / "train.csv").read_text() == text
    (sample,) = parse_annotations(tmp_path / "out" / "train.csv", classes=str(src / "classes.txt"))
    assert sample.label == 1 and probe(tmp_path / "out" / sample.path).height == 32


def test_no_audio_drops_the_track(short_videos, tmp_path):
    run_list(short_videos, tmp_path / "out", audio=False)
    assert not probe(tmp_path / "out" / "b" / "small.mp4").has_audio


def test_a_second_run_skips_finished_files_and_redoes_half_written_ones(short_videos, tmp_path):
    out = tmp_path / "out"
    run_list(short_videos, out)
    done = out / "a" / "big.mp4"
    stamp = done.stat().st_mtime_ns
    again = run_list(short_videos, out)
    assert (again.encoded, again.skipped, again.prepared) == (0, 2, 2) and done.stat().st_mtime_ns == stamp
    # a run killed while writing b/small.mp4 leaves only its temporary file
    (out / "b" / "small.mp4").unlink()
    (out / "b" / "small.mp4.part").write_bytes(b"\0" * 1000)
    third = run_list(short_videos, out)
    assert (third.encoded, third.skipped) == (1, 1)
    assert not (out / "b" / "small.mp4.part").exists()
    assert indices(out / "b" / "small.mp4") == list(range(25))


def test_other_settings_into_the_same_folder_are_refused(short_videos, tmp_path):
    run_list(short_videos, tmp_path / "out")
    with pytest.raises(ConfigError, match="prepared with other settings.*short_side 80 -> 64"):
        run_list(short_videos, tmp_path / "out", short_side=64)


def test_broken_and_missing_files_are_named_counted_and_left_out(short_videos, tmp_path):
    (short_videos / "broken.mp4").write_bytes(b"not a video" * 100)
    (short_videos / "list.txt").write_text("a/big.mkv 3\nbroken.mp4 1\nb/small.mp4 5\ngone.mp4 2\n")
    report = run_list(short_videos, tmp_path / "out", workers=2)  # a process per file
    assert (report.prepared, report.encoded, report.left_out) == (2, 2, 2) and not report.ok
    failed = {Path(f.path).name: f for f in report.failures}
    assert set(failed) == {"broken.mp4", "gone.mp4"}
    assert "not found" in failed["gone.mp4"].reason and failed["gone.mp4"].samples == ("gone",)
    assert "corrupt or unreadable" in failed["broken.mp4"].reason
    assert "2 failures, 2 samples left out: " in "\n".join(report.summary())
    assert (tmp_path / "out" / "list.txt").read_text() == "a/big.mp4 3\nb/small.mp4 5\n"
    assert not list((tmp_path / "out").rglob("*.part"))


def test_cli_exit_status_and_failure_policy(short_videos, tmp_path, capsys):
    (short_videos / "list.txt").write_text("b/small.mp4 5\ngone.mp4 2\n")
    args = ["data", "prepare", str(short_videos / "list.txt"), "--root", str(short_videos), "--format", "path_label"]
    args += ["--num-classes", "8", "--short-side", "80", "--preset", "ultrafast", "--workers", "1", "-q", "--out"]
    assert main([*args, str(tmp_path / "a")]) == 1
    printed = capsys.readouterr().out
    assert "gone.mp4: file not found (1 sample left out, e.g. gone)" in printed
    assert "1 sample of 2 prepared" in printed
    assert main([*args, str(tmp_path / "b"), "--allow-failures"]) == 0
    assert (tmp_path / "b" / "list.txt").read_text() == "b/small.mp4 5\n"


def test_an_unsupported_format_names_the_supported_ones(tmp_path):
    (tmp_path / "val.json").write_text('[{"id": "1", "label": "x", "template": "x", "placeholders": []}]')
    with pytest.raises(ConfigError, match="ssv2 format is not supported; supported formats: path_label, .*epic100"):
        prepare_dataset(tmp_path / "val.json", tmp_path, tmp_path / "out", progress=False)


def test_a_segment_outside_its_video_is_named_and_the_others_prepared(untrimmed, tmp_path):
    rows = [EPIC_HEADER, epic_row(*SEGMENTS[0]), epic_row("P01_01_9", "00:00:05.00", "00:00:06.00", 125, 150)]
    (untrimmed / "late.csv").write_text("\n".join(rows) + "\n")
    settings = PrepareSettings(short_side=64, cut_segments=True, **FAST)
    report = prepare_dataset(untrimmed / "late.csv", untrimmed, tmp_path, settings=settings, progress=False)
    assert report.prepared == 1 and len(report.failures) == 1
    assert "segment P01_01_9" in report.failures[0].path and "outside the video" in report.failures[0].reason
    assert len((tmp_path / "late.csv").read_text().splitlines()) == 2


def smoke_on(out: Path, tmp_path: Path, *extra: str):
    return smoke_config(
        tmp_path / "run",
        "data.format=epic100",
        "data.options={}",
        f"data.train={out / 'train.csv'}",
        f"data.root={out}",
        "data.batch_size=3",
        "model.composition=true",  # verb and noun heads
        *extra,
    )


def test_ca2st_train_reads_the_prepared_clips(cut, tmp_path):
    out, _ = cut
    dataset = build_dataset(smoke_on(out, tmp_path), "train")
    assert len(dataset) == 3
    for k in range(len(dataset)):
        video, _, target, meta = dataset[k]
        assert video.dtype == torch.uint8 and video.shape[-1] == 32 and set(target) == {"verb", "noun"}
    result = train(smoke_on(out, tmp_path, "optim.epochs=1"))
    losses = [h["loss"] for h in result.history if h["kind"] == "train"]
    assert losses and all(np.isfinite(losses))
    assert os.path.isdir(result.last_checkpoint)
