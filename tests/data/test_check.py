import math

import pytest
from odd_media import over_counting_avi, rotated_video, stream_copy_cut

import media
from ca2st.cli import main
from ca2st.data.check import audio_level, check_dataset
from dataset_media import make_video, write
from media import tone

ES_HEADER = (
    "annotation_id,participant_id,video_id,start_timestamp,stop_timestamp,start_sample,stop_sample,"
    "description,class,class_id\n"
)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    r = tmp_path_factory.mktemp("check")
    make_video(r / "good.mp4", 20, fps=10)
    make_video(r / "good2.mp4", 20, fps=10)
    make_video(r / "mute.mp4", 20, fps=10, audio=False)
    make_video(r / "tiny.mp4", 20, fps=10, width=32, height=24)
    make_video(r / "fast.mp4", 20, fps=25)
    (r / "broken.mp4").write_bytes(b"not a video at all" * 50)
    data = (r / "good.mp4").read_bytes()
    (r / "truncated.mp4").write_bytes(data[: len(data) // 3])
    return r


def test_clean_dataset_passes(root, tmp_path, capsys):
    ann = write(tmp_path / "ok.csv", "good.mp4 0\ngood2.mp4 1\n")
    report = check_dataset(ann, root, format="cast_k400", min_short_side=48, fps=10, progress=False)
    assert report.ok and report.num_files == 2 and report.fps == {10.0: 2} and report.short_sides == {48: 2}
    assert (
        main(
            [
                "data",
                "check",
                str(ann),
                "--root",
                str(root),
                "--format",
                "cast_k400",
                "--min-short-side",
                "48",
                "--audio",
                "-q",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "no problems found" in out and "2 samples in 2 files" in out


def test_every_problem_is_reported(root, tmp_path, capsys):
    ann = write(
        tmp_path / "bad.csv",
        "good.mp4 0\nmissing.mp4 1\nbroken.mp4 2\nmute.mp4 3\ntiny.mp4 4\nfast.mp4 5\ntruncated.mp4 6\ngood.mp4 0\n",
    )
    report = check_dataset(ann, root, format="cast_k400", audio=True, fps=10, min_short_side=40, progress=False)
    kinds = {(p.path.rsplit("/", 1)[-1], p.kind) for p in report.problems}
    assert kinds == {
        ("missing.mp4", "missing"),
        ("broken.mp4", "undecodable"),
        ("mute.mp4", "no audio"),
        ("tiny.mp4", "short side"),
        ("fast.mp4", "fps"),
        ("truncated.mp4", "undecodable"),
    }
    assert report.num_samples == 7 and report.num_files == 7 and not report.ok  # the repeated row counts once
    code = main(
        [
            "data",
            "check",
            str(ann),
            "--root",
            str(root),
            "--format",
            "cast_k400",
            "--audio",
            "--fps",
            "10",
            "--min-short-side",
            "40",
            "-q",
        ]
    )
    out = capsys.readouterr().out
    assert code == 1
    assert "missing.mp4: missing: file not found (used by 1 sample, e.g." in out
    assert "mute.mp4: no audio: the video has no audio track" in out
    assert "tiny.mp4: short side: 32x24: short side 24px < 40px" in out
    assert "fast.mp4: fps: 25 fps, expected 10" in out
    assert "6 problems in 6 of 7 files" in out and "hint" not in out  # --root was given


def test_a_missing_root_is_named_once_with_a_hint(tmp_path, capsys):
    ann = write(tmp_path / "list.csv", "good.mp4 0\n")
    assert main(["data", "check", str(ann), "--format", "cast_k400", "-q"]) == 1
    out = capsys.readouterr().out
    assert "1 problem in 1 of 1 file: missing 1" in out and "1 sample in 1 file" in out
    hints = [line for line in out.splitlines() if line.startswith("hint:")]
    assert hints == [f"hint: 1 file of 1 not found: the paths in {ann} are relative to --root, and no --root was given"]


def test_segments_and_separate_audio(root, tmp_path):
    ann = write(
        tmp_path / "EPIC_Sounds.csv",
        ES_HEADER
        + "s0,P01,good,00:00:00.500,00:00:01.000,0,1,x,rustle,4\n"
        + "s1,P01,good,00:00:05.000,00:00:06.000,0,1,x,rustle,4\n",
    )
    report = check_dataset(
        ann,
        root,
        video_template="{video_id}.mp4",
        audio_template="{annotation_id}.wav",
        audio=True,
        min_short_side=None,
        progress=False,
    )
    msgs = [str(p) for p in report.problems]
    assert any("segment: sample s1" in m and "outside the video" in m for m in msgs)
    assert any("s0.wav: no audio: audio file not found" in m for m in msgs)
    assert report.format == "epic_sounds"


def test_malformed_annotation_exits_2(tmp_path, capsys):
    ann = write(tmp_path / "ek.csv", "P01_1,3,12\nP01_2,3\n")
    assert main(["data", "check", str(ann), "--root", str(tmp_path), "-q"]) == 2
    assert "ek.csv:2: malformed row" in capsys.readouterr().err


def test_a_malformed_annotation_file_exits_2_with_one_line(tmp_path, capsys):
    bad = write(tmp_path / "list.txt", "a.mp4 1\nb.mp4 2\n")
    bad.write_bytes(bad.read_bytes() + b"c\xff.mp4 0\n")
    assert main(["data", "check", str(bad), "--format", "path_label", "--num-classes", "3", "-q"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {bad}:3: not UTF-8 text (byte 0xff at offset 17); save the file as UTF-8\n"
    epic = write(
        tmp_path / "e.csv",
        "narration_id,participant_id,video_id,start_timestamp,stop_timestamp\nP01_1,P01,P01_11,0,inf\n",
    )
    assert main(["data", "check", str(epic), "-q"]) == 2
    assert capsys.readouterr().err == (
        f"error: {epic}:2: stop_timestamp: timestamp 'inf' is not a number of seconds in [0, 1e+07]\n"
    )


@pytest.fixture(scope="module")
def odd(tmp_path_factory):
    """Files that read but deserve a report: silent and near-silent tracks, an over-counting AVI header, an edit
    list, a rotated phone video."""
    r = tmp_path_factory.mktemp("odd")
    seconds = 2.0
    for name, amplitude in (("silent", 0.0), ("hush", 1e-4), ("quiet", 0.01)):
        wave = tone([440.0], seconds, 48000, [amplitude])
        media.make_video(r / f"{name}.mp4", "mp4", 50, audio=wave, audio_layout="mono")
    avi = media.make_video(r / "clip.avi", "avi", 50)
    over_counting_avi(avi, r / "over.avi")
    stream_copy_cut(media.make_video(r / "clip.mp4", "mp4", 50), r / "cut.mp4", 30)  # keyframe 24: 6 hidden
    rotated_video(r / "phone.mp4", -90)
    return r


def test_silent_and_near_silent_audio(odd, tmp_path, capsys):
    ann = write(tmp_path / "av.csv", "silent.mp4 0\nhush.mp4 1\nquiet.mp4 2\n")
    report = check_dataset(ann, odd, format="cast_k400", audio=True, min_short_side=None, progress=False)
    silent = {p.path.rsplit("/", 1)[-1]: p.message for p in report.problems if p.kind == "silent audio"}
    assert set(silent) == {"silent.mp4", "hush.mp4"} and len(report.problems) == 2
    assert silent["silent.mp4"].startswith("RMS level -inf dBFS over the first 30 s, below -60 dBFS")
    level = float(silent["hush.mp4"].split()[2])
    assert level == pytest.approx(20 * math.log10(1e-4 / math.sqrt(2)), abs=1.5)  # a sine's RMS is its peak/√2
    assert audio_level(odd / "quiet.mp4") == pytest.approx(20 * math.log10(0.01 / math.sqrt(2)), abs=0.5)
    args = ["data", "check", str(ann), "--root", str(odd), "--format", "cast_k400", "--audio", "-q"]
    assert main([*args, "--min-short-side", "0", "--silence-db", "-30"]) == 1
    out = capsys.readouterr().out
    assert "quiet.mp4: silent audio: RMS level -4" in out and "silent audio 3" in out
    assert main([*args, "--min-short-side", "0", "--audio-seconds", "0"]) == 2


def test_segment_ending_past_its_video(root, tmp_path):
    ann = write(
        tmp_path / "EPIC_Sounds.csv",
        ES_HEADER
        + "in,P01,good,00:00:00.500,00:00:02.300,0,1,x,rustle,4\n"  # 0.3 s past a 2 s video: rounding
        + "far,P01,good,00:00:01.000,00:00:07.000,0,1,x,rustle,4\n",
    )
    report = check_dataset(ann, root, video_template="{video_id}.mp4", min_short_side=None, progress=False)
    assert [p.message.split(":")[0] for p in report.problems] == [f"sample far ({ann}"]
    assert "ends at 7 s, 5.00 s past the end of the video (2.00 s, 20 frames)" in report.problems[0].message
    strict = check_dataset(
        ann, root, video_template="{video_id}.mp4", min_short_side=None, segment_tolerance=0.2, progress=False
    )
    assert len(strict.problems) == 2


def test_frame_count_and_rotation_notes(odd, tmp_path, capsys):
    ann = write(tmp_path / "odd.csv", "over.avi 0\ncut.mp4 1\nphone.mp4 2\nclip.avi 3\n")
    report = check_dataset(ann, odd, format="cast_k400", min_short_side=None, progress=False)
    assert report.ok
    notes = {(n.path.rsplit("/", 1)[-1], n.kind): n.message for n in report.notes}
    assert set(notes) == {("over.avi", "frame count"), ("cut.mp4", "frame count"), ("phone.mp4", "rotation")}
    assert notes["over.avi", "frame count"].startswith("the header declares 51 frames, 50 decode")
    assert notes["cut.mp4", "frame count"].startswith("the header declares 26 frames, 20 are presented (an edit")
    assert "turns the video 270 degrees" in notes["phone.mp4", "rotation"]
    assert main(["data", "check", str(ann), "--root", str(odd), "--format", "cast_k400", "--min-short-side", "0"]) == 0
    out = capsys.readouterr().out
    assert "note: " in out and "notes (handled): frame count 2, rotation 1" in out and "no problems found" in out


def test_fps_that_disagrees_with_the_epic_frame_numbers(tmp_path):
    (tmp_path / "P01" / "videos").mkdir(parents=True)
    make_video(tmp_path / "P01" / "videos" / "P01_11.MP4", 40, fps=10)  # re-encoded at 10 fps
    head = "narration_id,participant_id,video_id,start_timestamp,stop_timestamp,start_frame,stop_frame,verb_class,noun_class\n"
    rows = [  # the official frame numbers are at 50 fps: 1.5 s is frame 75
        "P01_11_0,P01,P01_11,00:00:01.50,00:00:02.00,75,100,1,2\n",
        "P01_11_1,P01,P01_11,00:00:02.00,00:00:03.00,100,150,3,4\n",
    ]
    ann = write(tmp_path / "EPIC_100_validation.csv", head + "".join(rows))
    report = check_dataset(ann, tmp_path, progress=False)
    fps = [p for p in report.problems if p.kind == "fps"]
    assert len(fps) == 1 and "10 fps, but the annotation's frame numbers and timestamps imply 50 fps" in fps[0].message
    consistent = write(
        tmp_path / "ok.csv",
        head + "".join(r.replace(",75,100,", ",15,20,").replace(",100,150,", ",20,30,") for r in rows),
    )
    assert not [p for p in check_dataset(consistent, tmp_path, progress=False).problems if p.kind == "fps"]
