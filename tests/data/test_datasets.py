import json
import logging
from pathlib import Path

import pytest

from ca2st.data.datasets import (
    FORMATS,
    guess_format,
    load_class_map,
    load_class_mapping,
    parse_annotations,
    parse_timestamp,
)
from ca2st.errors import ConfigError, DataError
from conftest import REPO
from dataset_media import write

REFERENCE = REPO.parent / "shared" / "reference" / "annotations"


def reference(name: str) -> Path:
    path = REFERENCE / name / "val.csv"
    if not path.is_file():
        pytest.skip(f"reference annotation {path} is absent (the shared reference folder is not mounted)")
    return path


# ------------------------------------------------------------------ helpers


def test_timestamps():
    assert parse_timestamp("00:00:01.089") == pytest.approx(1.089)
    assert parse_timestamp("01:02:03.5") == pytest.approx(3723.5)
    assert parse_timestamp("00:10:00") == 600
    assert parse_timestamp("7.44") == pytest.approx(7.44)
    with pytest.raises(DataError, match=r"f\.csv:3: .*malformed timestamp 'noon'"):
        parse_timestamp("noon", "f.csv:3")
    with pytest.raises(DataError, match=">= 60"):
        parse_timestamp("00:61:00.00", "x")


def test_class_map_layouts(tmp_path):
    assert load_class_map(write(tmp_path / "a.txt", "b\na\n")) == ["b", "a"]  # file order, not sorted
    assert load_class_map(write(tmp_path / "ind.txt", "1 Walk\n2 Run\n")) == ["Walk", "Run"]
    assert load_class_map(write(tmp_path / "ind0.txt", "0,Walk\n1,Run\n")) == ["Walk", "Run"]
    assert load_class_map(write(tmp_path / "l.json", json.dumps({"y": "1", "x": "0"}))) == ["x", "y"]
    with pytest.raises(DataError, match="appears twice"):
        load_class_map(write(tmp_path / "d.txt", "0 a\n0 b\n"))
    with pytest.raises(DataError, match="not contiguous"):
        load_class_map(write(tmp_path / "g.txt", "0 a\n2 b\n"))
    with pytest.raises(DataError, match="not found"):
        load_class_map(tmp_path / "missing.txt")


def test_class_mapping_file(tmp_path):
    m = write(tmp_path / "m.csv", "kind,source_class,target_class\nverb,0,5\nnoun,3,7\n")
    assert load_class_mapping(m) == {"verb": {0: 5}, "noun": {3: 7}}
    bad = write(tmp_path / "b.csv", "kind,source_class,target_class\nverb,0,5\nverb,0,6\n")
    with pytest.raises(DataError, match=r"b\.csv:3: verb 0 is mapped twice"):
        load_class_mapping(bad)


def test_unknown_format_and_option():
    with pytest.raises(ConfigError, match="unknown annotation format"):
        parse_annotations("x.csv", "nope")
    with pytest.raises(ConfigError, match="takes no option"):
        parse_annotations("x.csv", "cast_ek100", classes="c.txt")


# ------------------------------------------------------------------ the official CAST lists


def test_cast_ek100(tmp_path):
    a = parse_annotations(write(tmp_path / "ek.csv", "P01_01_0,3,12\nP01_01_1,96,299\n"), "cast_ek100")
    assert [s.id for s in a] == ["P01_01_0", "P01_01_1"]
    assert a[0].label == {"verb": 3, "noun": 12} and a[0].path == "P01_01_0.mp4" and a[0].start is None
    assert a.num_classes == {"verb": 97, "noun": 300} and a.sampler == "segment" and a.flip


@pytest.mark.parametrize(
    "text, message",
    [
        ("P01_01_0,3\n", r"ek\.csv:1: malformed row .* expected 3 fields"),
        ("P01_01_0,3,1\nP01_01_1,97,1\n", r"ek\.csv:2: verb 97 is out of range: expected 0..96"),
        ("P01_01_0,3,300\n", r"ek\.csv:1: noun 300 is out of range: expected 0..299"),
        ("P01_01_0,x,3\n", r"ek\.csv:1: verb 'x' is not an integer"),
    ],
)
def test_cast_ek100_bad_rows(tmp_path, text, message):
    with pytest.raises(DataError, match=message):
        parse_annotations(write(tmp_path / "ek.csv", text), "cast_ek100")


def test_cast_ssv2_k400(tmp_path):
    a = parse_annotations(write(tmp_path / "s.csv", "1.mp4 0\n\n2.mp4 173\n"), "cast_ssv2")
    assert len(a) == 2 and a[1].label == 173 and a.sampler == "segment" and not a.flip
    k = parse_annotations(write(tmp_path / "k.csv", "abc.mp4 399\n"), "cast_k400", video_template="val/{path}")
    assert k[0].path == "val/abc.mp4" and k[0].id == "abc" and k.sampler == "dense" and k.flip
    with pytest.raises(DataError, match=r"s\.csv:1: label 174 is out of range: expected 0..173"):
        parse_annotations(write(tmp_path / "s.csv", "1.mp4 174\n"), "cast_ssv2")
    with pytest.raises(DataError, match=r"s\.csv:2: malformed row"):
        parse_annotations(write(tmp_path / "s.csv", "1.mp4 1\n2.mp4\n"), "cast_ssv2")
    with pytest.raises(DataError, match="needs num_classes"):
        parse_annotations(write(tmp_path / "s.csv", "1.mp4 1\n"), "path_label")


@pytest.mark.parametrize(
    "name, fmt, rows, classes",
    [
        ("ek100", "cast_ek100", 9668, {"verb": 97, "noun": 300}),
        ("ssv2", "cast_ssv2", 24777, 174),
        ("k400", "cast_k400", 19796, 400),
    ],
)
def test_reference_cast_annotations(name, fmt, rows, classes):
    path = reference(name)
    a = parse_annotations(path, fmt)
    assert len(a) == rows and a.num_classes == classes
    assert len({s.id for s in a}) == rows
    assert guess_format(path) == ("cast_ek100" if name == "ek100" else "path_label")
    if name == "ek100":
        assert a[0].id == "P20_05_0" and a[0].label == {"verb": 0, "noun": 14}
        assert max(s.label["verb"] for s in a) <= 96 and max(s.label["noun"] for s in a) <= 299
    else:
        assert all(s.path.endswith(".mp4") for s in a)


# ------------------------------------------------------------------ EPIC-KITCHENS-100 official


EPIC_HEADER = (
    "narration_id,participant_id,video_id,narration_timestamp,start_timestamp,stop_timestamp,start_frame,"
    "stop_frame,narration,verb,verb_class,noun,noun_class,all_nouns,all_noun_classes\n"
)


def test_epic100(tmp_path):
    f = write(
        tmp_path / "EPIC_100_validation.csv",
        EPIC_HEADER
        + "P01_11_0,P01,P01_11,00:00:00.560,00:00:00.14,00:00:03.37,8,202,take plate,take,0,plate,2,\"['plate', 'cup']\",\"[2, 5]\"\n"
        + "P01_11_1,P01,P01_11,00:00:04.00,00:01:04.5,00:01:05.25,3226,3263,open door,open,3,door,8,['door'],[8]\n",
    )
    assert guess_format(f) == "epic100"
    a = parse_annotations(f)
    s = a[0]
    assert s.id == "P01_11_0" and s.path == "P01/videos/P01_11.MP4"
    assert (s.start, s.end, s.unit) == (pytest.approx(0.14), pytest.approx(3.37), "seconds")
    assert s.label == {"verb": 0, "noun": 2} and a[1].start == pytest.approx(64.5)
    fr = parse_annotations(f, "epic100", use_frames=True)
    assert (fr[0].start, fr[0].end, fr[0].unit) == (7, 202, "frames")
    tr = parse_annotations(
        f, "epic100", trimmed=True, video_template="{narration_id}.mp4", audio_template="{narration_id}.wav"
    )
    assert tr[1].path == "P01_11_1.mp4" and tr[1].audio_path == "P01_11_1.wav" and tr[1].start is None


def test_epic100_test_file_without_labels(tmp_path):
    f = write(
        tmp_path / "t.csv",
        "narration_id,participant_id,video_id,start_timestamp,stop_timestamp\n"
        "P01_101_0,P01,P01_101,00:00:01.00,00:00:02.00\n",
    )
    assert parse_annotations(f, "epic100")[0].label is None


@pytest.mark.parametrize(
    "row, message",
    [
        ("P01_11_0,P01,P01_11,0,00:00:0x.14,00:00:03.37,8,202,n,v,0,n,2,[],[]", r":2: start_timestamp: malformed"),
        ("P01_11_0,P01,P01_11,0,00:00:04.00,00:00:03.37,8,202,n,v,0,n,2,[],[]", r":2: segment .* is empty"),
        ("P01_11_0,P01,P01_11,0,00:00:01.00,00:00:03.37,8,202,n,v,97,n,2,[],[]", r":2: verb_class 97 is out of range"),
        (
            "P01_11_0,P01,P01_11,0,00:00:01.00,00:00:03.37,8,202,n,v,0,n,300,[],[]",
            r":2: noun_class 300 is out of range",
        ),
        ("P01_11_0,P01,P01_11,0,00:00:01.00", r":2: malformed row: 5 fields, the header has 15"),
    ],
)
def test_epic100_bad_rows(tmp_path, row, message):
    with pytest.raises(DataError, match=message):
        parse_annotations(write(tmp_path / "e.csv", EPIC_HEADER + row + "\n"), "epic100")


def test_epic100_missing_column(tmp_path):
    with pytest.raises(DataError, match=r"e\.csv:1: header lacks the column\(s\) \['stop_timestamp'\]"):
        parse_annotations(
            write(tmp_path / "e.csv", "narration_id,participant_id,video_id,start_timestamp\n"), "epic100"
        )


# ------------------------------------------------------------------ SSV2 official JSON


SSV2_LABELS = {
    "Holding something next to something": "1",
    "Pushing something from left to right": "0",
    "Putting something into something": "2",
}


def test_ssv2_json(tmp_path):
    labels = write(tmp_path / "labels.json", json.dumps(SSV2_LABELS))
    entries = [
        {
            "id": "78687",
            "label": "holding potato next to vicks",
            "template": "Holding [something] next to [something]",
            "placeholders": ["potato", "vicks"],
        },
        {
            "id": "42326",
            "label": "pushing pen from left to right",
            "template": "Pushing [something] from left to right",
            "placeholders": ["pen"],
        },
    ]
    f = write(tmp_path / "validation.json", json.dumps(entries))
    assert guess_format(f) == "ssv2"
    a = parse_annotations(f, classes=labels)
    assert [s.label for s in a] == [1, 0] and a[0].path == "78687.webm" and not a.flip and a.sampler == "segment"
    assert a.num_classes == 3 and a.class_names[0] == "Pushing something from left to right"
    test = parse_annotations(
        write(tmp_path / "test.json", json.dumps([{"id": "1"}])), "ssv2", classes=labels, video_template="{id}.mp4"
    )
    assert test[0].label is None and test[0].path == "1.mp4"


def test_ssv2_errors(tmp_path):
    labels = write(tmp_path / "labels.json", json.dumps(SSV2_LABELS))
    f = write(tmp_path / "v.json", json.dumps([{"id": "1", "template": "Dancing with [something]"}]))
    with pytest.raises(DataError, match=r"v\.json: entry 0 \(id 1\): template 'Dancing with \[something\]' is not"):
        parse_annotations(f, "ssv2", classes=labels)
    with pytest.raises(DataError, match="needs classes="):
        parse_annotations(f, "ssv2")
    with pytest.raises(DataError, match=r"v\.json:1: malformed JSON"):
        parse_annotations(write(tmp_path / "v.json", "[{"), "ssv2", classes=labels)
    with pytest.raises(DataError, match="entry 1: malformed entry"):
        parse_annotations(write(tmp_path / "v.json", json.dumps([{"id": "1"}, {"x": 2}])), "ssv2", classes=labels)


# ------------------------------------------------------------------ Kinetics and Kinetics-Sound


K_HEADER = "label,youtube_id,time_start,time_end,split\n"


def test_kinetics(tmp_path):
    classes = write(tmp_path / "k400_classes.txt", "zumba\nabseiling\npassing American football (in game)\n")
    f = write(
        tmp_path / "validate.csv",
        K_HEADER + "abseiling,0wR5jVB-WPk,417,427,validate\n"
        '"passing American football (in game)",-5BkG7RWMlk,10,20,validate\n',
    )
    assert guess_format(f) == "kinetics"
    a = parse_annotations(f, classes=classes)
    assert [s.label for s in a] == [1, 2]  # the class file's order, not alphabetical
    assert a[0].path == "0wR5jVB-WPk_000417_000427.mp4" and a[1].id == "-5BkG7RWMlk_000010_000020"
    b = parse_annotations(f, "kinetics", classes=classes, video_template="{split}/{label}/{youtube_id}.mp4")
    assert b[0].path == "validate/abseiling/0wR5jVB-WPk.mp4"
    with pytest.raises(DataError, match=r"validate\.csv:3: label 'dancing' is not a class"):
        parse_annotations(
            write(tmp_path / "validate.csv", K_HEADER + "zumba,a,0,10,validate\ndancing,b,0,10,validate\n"),
            "kinetics",
            classes=classes,
        )
    with pytest.raises(DataError, match="needs classes="):
        parse_annotations(f, "kinetics")


def test_kinetics_sound_subset(tmp_path):
    subset = write(tmp_path / "ks_classes.txt", "playing drums\nabseiling\n")
    f = write(
        tmp_path / "train.csv", K_HEADER + "abseiling,a,0,10,train\nzumba,b,0,10,train\nplaying drums,c,5,15,train\n"
    )
    a = parse_annotations(f, "kinetics_sound", classes=subset)
    assert [(s.id, s.label) for s in a] == [("a_000000_000010", 1), ("c_000005_000015", 0)]
    assert a.num_classes == 2 and len(a.excluded) == 1 and "zumba" in a.excluded[0][1]


# ------------------------------------------------------------------ UCF-101


def test_ucf101_lists(tmp_path):
    write(tmp_path / "classInd.txt", "1 ApplyEyeMakeup\n2 HandstandPushups\n")
    train = write(
        tmp_path / "trainlist01.txt",
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\nHandstandPushups/v_HandStandPushups_g08_c01.avi 2\n",
    )
    test = write(tmp_path / "testlist01.txt", "HandstandPushups/v_HandStandPushups_g01_c01.avi\n")
    assert guess_format(train) == "ucf101" and guess_format(test) == "ucf101"
    a = parse_annotations(train)
    assert [s.label for s in a] == [0, 1] and a[0].id == "v_ApplyEyeMakeup_g08_c01"
    assert parse_annotations(test, "ucf101")[0].label == 1
    bad = write(tmp_path / "trainlist02.txt", "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 0\n")
    with pytest.raises(DataError, match=r"trainlist02\.txt:1: label 0 \(1-based\) names 'no class'"):
        parse_annotations(bad, "ucf101")
    unknown = write(tmp_path / "testlist03.txt", "Juggling/v_Juggling_g01_c01.avi\n")
    with pytest.raises(DataError, match=r"testlist03\.txt:1: class folder 'Juggling' is not in"):
        parse_annotations(unknown, "ucf101")
    alone = write(tmp_path / "other" / "trainlist01.txt", "A/v_A_g01_c01.avi 1\n")
    with pytest.raises(DataError, match="needs classes=.*classInd"):
        parse_annotations(alone, "ucf101")


# ------------------------------------------------------------------ VGG-Sound


def test_vggsound(tmp_path):
    classes = write(tmp_path / "classes.txt", "people marching\ndog barking, growling\n")
    f = write(
        tmp_path / "vggsound.csv", '---g-f_I2yQ,1,people marching,test\n-0BIyqJj9ZU,30,"dog barking, growling",train\n'
    )
    assert guess_format(f) == "vggsound"
    a = parse_annotations(f, classes=classes)
    assert [s.label for s in a] == [0, 1] and a[0].path == "---g-f_I2yQ_000001.mp4"
    assert [s.id for s in parse_annotations(f, "vggsound", classes=classes, split="train")] == ["-0BIyqJj9ZU_000030"]
    with pytest.raises(DataError, match=r"v\.csv:1: label 'cat' is not a class"):
        parse_annotations(write(tmp_path / "v.csv", "a,1,cat,test\n"), "vggsound", classes=classes)
    with pytest.raises(DataError, match=r"v\.csv:1: malformed row: 3 fields"):
        parse_annotations(write(tmp_path / "v.csv", "a,1,cat\n"), "vggsound", classes=classes)


# ------------------------------------------------------------------ EPIC-SOUNDS, HD-EPIC, HD-EPIC-SOUNDS


ES_HEADER = (
    "annotation_id,participant_id,video_id,start_timestamp,stop_timestamp,start_sample,stop_sample,"
    "description,class,class_id\n"
)


def test_epic_sounds(tmp_path):
    f = write(
        tmp_path / "EPIC_Sounds_validation.csv",
        ES_HEADER
        + "P01_100_0,P01,P01_100,00:00:02.466,00:00:05.315,59184,127560,paper rustle,rustle,4\n"
        + "P01_100_1,P01,P01_100,00:00:05.000,00:00:06.000,1,2,cutting,cut / chop,43\n",
    )
    assert guess_format(f) == "epic_sounds"
    a = parse_annotations(f)
    assert a.num_classes == 44 and [s.label for s in a] == [4, 43]
    assert a[0].start == pytest.approx(2.466) and a[0].path == "P01/videos/P01_100.MP4"
    assert a.class_names[4] == "rustle"
    t = parse_annotations(
        f, "epic_sounds", trimmed=True, video_template="{annotation_id}.mp4", audio_template="{annotation_id}.wav"
    )
    assert t[0].audio_path == "P01_100_0.wav" and t[0].start is None
    bad = write(tmp_path / "b.csv", ES_HEADER + "a,P01,P01_1,00:00:01.0,00:00:02.0,1,2,x,rustle,44\n")
    with pytest.raises(DataError, match=r"b\.csv:2: class_id 44 is out of range: expected 0..43"):
        parse_annotations(bad, "epic_sounds")
    clash = write(
        tmp_path / "c.csv",
        ES_HEADER + "a,P01,P01_1,00:00:01.0,00:00:02.0,1,2,x,rustle,4\n"
        "b,P01,P01_1,00:00:03.0,00:00:04.0,1,2,x,water,4\n",
    )
    with pytest.raises(DataError, match=r"c\.csv:3: class_id 4 is named 'water' here but 'rustle' before"):
        parse_annotations(clash, "epic_sounds")


HD_HEADER = (
    "unique_narration_id,participant_id,video_id,narration,start_timestamp,end_timestamp,verb_classes,"
    "noun_classes,main_action_classes\n"
)


def test_hd_epic_mapped_to_ek100(tmp_path):
    f = write(
        tmp_path / "HD_EPIC_Narrations.csv",
        HD_HEADER
        + 'P01-20240202-110250-1,P01,P01-20240202-110250,Open the cupboard,7.44,8.75,"[3, 34]","[3, 3]","[(3, 3)]"\n'
        + 'P01-20240202-110250-2,P01,P01-20240202-110250,Stir,9.0,10.0,[90],[100],"[(90, 100)]"\n',
    )
    mapping = write(tmp_path / "hd_to_ek.csv", "kind,source_class,target_class\nverb,3,3\nnoun,3,8\n")
    assert guess_format(f) == "hd_epic"
    a = parse_annotations(f, mapping=mapping)
    assert len(a) == 1 and a[0].label == {"verb": 3, "noun": 8} and a.num_classes == {"verb": 97, "noun": 300}
    assert a[0].path == "P01/P01-20240202-110250.mp4" and a[0].start == pytest.approx(7.44)
    assert len(a.excluded) == 1 and "no EK100 counterpart" in a.excluded[0][1]
    raw = parse_annotations(f, "hd_epic", num_classes={"verb": 200, "noun": 400})
    assert [s.label for s in raw] == [{"verb": 3, "noun": 3}, {"verb": 90, "noun": 100}]
    default = parse_annotations(f, "hd_epic")  # EK100's ids: no mapping needed
    assert [s.label for s in default] == [{"verb": 3, "noun": 3}, {"verb": 90, "noun": 100}]
    assert default.num_classes == {"verb": 97, "noun": 300} and not default.excluded
    with pytest.raises(DataError, match="pickles are not read"):
        parse_annotations(tmp_path / "HD_EPIC_Narrations.pkl", "hd_epic", mapping=mapping)
    bad = write(tmp_path / "b.csv", HD_HEADER + "x,P01,v,n,1.0,2.0,[1],[1],not-a-list\n")
    with pytest.raises(DataError, match=r"b\.csv:2: column main_action_classes 'not-a-list'"):
        parse_annotations(bad, "hd_epic", mapping=mapping)
    for pairs, message in [("[3]", "is not a list of"), ("[(1.5, 2)]", "verb '?1.5'? is not an integer")]:
        bad = write(tmp_path / "b.csv", HD_HEADER + f'x,P01,v,n,1.0,2.0,[1],[1],"{pairs}"\n')
        with pytest.raises(DataError, match=rf"b\.csv:2: .*{message}"):
            parse_annotations(bad, "hd_epic", mapping=mapping)


def test_hd_epic_sounds(tmp_path):
    f = write(
        tmp_path / "HD_EPIC_Sounds.csv",
        "participant_id,video_id,start_timestamp,stop_timestamp,start_sample,"
        "stop_sample,class,class_id\nP01,P01-20240202-110250,00:00:00.476,00:00:02.520,22848,120960,rustle,4\n"
        "P01,P01-20240202-110250,00:00:03.000,00:00:04.000,144000,192000,beep,30\n",
    )
    assert guess_format(f) == "hd_epic_sounds"
    a = parse_annotations(f)
    assert [s.label for s in a] == [4, 30] and a[0].id == "P01-20240202-110250_22848"
    mapping = write(tmp_path / "m.csv", "kind,source_class,target_class\nclass,4,5\n")
    m = parse_annotations(f, "hd_epic_sounds", mapping=mapping)
    assert [s.label for s in m] == [5] and len(m.excluded) == 1


# ------------------------------------------------------------------ ActivityNet


def test_activitynet(tmp_path):
    classes = write(tmp_path / "anet_classes.txt", "Long jump\nPlaying guitarra\n")
    db = {
        "version": "VERSION 1.3",
        "taxonomy": [],
        "database": {
            "abc": {
                "subset": "validation",
                "duration": 80.0,
                "url": "u",
                "annotations": [
                    {"segment": [1.5, 10.0], "label": "Playing guitarra"},
                    {"segment": [20, 30], "label": "Long jump"},
                ],
            },
            "def": {"subset": "training", "duration": 10.0, "annotations": [{"segment": [0, 5], "label": "Long jump"}]},
            "ghi": {"subset": "testing", "duration": 10.0, "annotations": []},
        },
    }
    f = write(tmp_path / "activity_net.v1-3.min.json", json.dumps(db))
    assert guess_format(f) == "activitynet"
    a = parse_annotations(f, classes=classes, subset="validation")
    assert [(s.id, s.label, s.start, s.end) for s in a] == [("abc_0", 1, 1.5, 10.0), ("abc_1", 0, 20.0, 30.0)]
    assert a[0].path == "v_abc.mp4"
    assert len(parse_annotations(f, "activitynet", classes=classes)) == 3
    db["database"]["abc"]["annotations"][1]["segment"] = [30, 20]
    with pytest.raises(DataError, match=r"video abc annotation 1: segment \[30.0, 20.0\] is empty"):
        parse_annotations(write(tmp_path / "b.json", json.dumps(db)), "activitynet", classes=classes)
    db["database"]["abc"]["annotations"][1] = {"segment": [1, 2], "label": "Surfing"}
    with pytest.raises(DataError, match="label 'Surfing' is not a class"):
        parse_annotations(write(tmp_path / "b.json", json.dumps(db)), "activitynet", classes=classes)


def test_every_format_has_a_parser_and_guessing_fails_clearly(tmp_path):
    assert len(FORMATS) == 14
    with pytest.raises(DataError, match="cannot tell the annotation format"):
        guess_format(write(tmp_path / "x.txt", "hello world again\n"))
    with pytest.raises(DataError, match="annotation file not found"):
        parse_annotations(tmp_path / "none.csv", "cast_ek100")


# ------------------------------------------------------------------ bad annotation files


@pytest.mark.parametrize("text", ["inf", "Infinity", "-inf", "nan", "1e308", "-3", "1e8", "99999999:00:00"])
def test_non_finite_negative_or_absurd_timestamps_are_rejected(text):
    with pytest.raises(
        DataError, match=rf"f\.csv:3: start: timestamp '{text}' is not a number of seconds in \[0, 1e\+07\]"
    ):
        parse_timestamp(text, "f.csv:3: start")


@pytest.mark.parametrize("bad", ["inf", "nan", "1e308", "-1"])
def test_bad_timestamps_fail_at_parse_time_with_file_and_line(tmp_path, bad):
    classes = write(tmp_path / "classes.txt", "zumba\nabseiling\n")
    epic = write(tmp_path / "e.csv", EPIC_HEADER + f"P01_1,P01,P01_11,0,00:00:01.0,{bad},8,202,x,x,0,x,2,[],[]\n")
    with pytest.raises(DataError, match=r"e\.csv:2: stop_timestamp: timestamp"):
        parse_annotations(epic)
    kinetics = write(tmp_path / "k.csv", K_HEADER + f"zumba,a,{bad},10,validate\n")
    with pytest.raises(DataError, match=r"k\.csv:2: time_start: timestamp"):
        parse_annotations(kinetics, "kinetics", classes=classes)
    vgg = write(tmp_path / "v.csv", f"a,{bad},zumba,test\n")
    with pytest.raises(DataError, match=r"v\.csv:1: start second: timestamp"):
        parse_annotations(vgg, "vggsound", classes=classes)
    db = {
        "database": {"abc": {"subset": "validation", "annotations": [{"segment": [0, float(bad)], "label": "zumba"}]}}
    }
    with pytest.raises(DataError, match=r"a\.json: video abc annotation 0: segment end: timestamp"):
        parse_annotations(write(tmp_path / "a.json", json.dumps(db)), "activitynet", classes=classes)


def test_unreadable_empty_and_non_utf8_files_name_the_file(tmp_path, monkeypatch):
    latin = tmp_path / "latin.csv"
    latin.write_bytes(b"a.mp4 1\nb\xe9b\xe9.mp4 2\n")
    with pytest.raises(DataError, match=r"latin\.csv:2: not UTF-8 text \(byte 0xe9"):
        parse_annotations(latin, "path_label", num_classes=3)
    with pytest.raises(DataError, match=r"latin\.csv:2: not UTF-8"):
        guess_format(latin)
    (tmp_path / "folder.csv").mkdir()
    with pytest.raises(DataError, match=r"folder\.csv: is a folder, not an annotation file"):
        parse_annotations(tmp_path / "folder.csv", "cast_ek100")
    for name, text, fmt in [
        ("empty.csv", "", None),
        ("blank.txt", "\n \n", "path_label"),
        ("header.csv", "id,verb,noun\n", "cast_ek100"),
    ]:
        with pytest.raises(DataError, match=rf"{name}: (the annotation file is empty|no samples)"):
            parse_annotations(write(tmp_path / name, text), fmt, num_classes=3 if fmt == "path_label" else None)
    locked = write(tmp_path / "locked.csv", "a.mp4 1\n")

    def denied(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(DataError, match=r"locked\.csv: cannot read the file: Permission denied"):
        parse_annotations(locked, "path_label", num_classes=3)


def test_duplicate_ids(tmp_path, caplog):
    conflict = write(tmp_path / "c.txt", "a.mp4 1\nb.mp4 2\nx/a.mp4 0\n")
    with pytest.raises(DataError, match=r"c\.txt:3: sample id 'a' appears twice with label 0 here, 1 at .*c\.txt:1"):
        parse_annotations(conflict, "path_label", num_classes=3)
    with pytest.raises(DataError, match=r"c\.txt:3: sample id 'a' appears twice with another file or segment"):
        parse_annotations(write(tmp_path / "c.txt", "a.mp4 1\nb.mp4 2\nx/a.mp4 1\n"), "path_label", num_classes=3)
    repeated = write(tmp_path / "r.txt", "a.mp4 1\nb.mp4 2\na.mp4 1\nb.mp4 2\n")
    with caplog.at_level(logging.WARNING):
        a = parse_annotations(repeated, "path_label", num_classes=3)
    assert [s.id for s in a] == ["a", "b"]  # an identical repeat is kept once
    assert [r.getMessage() for r in caplog.records] == [
        f"{repeated}: 2 duplicate rows dropped (identical to an earlier row), e.g. sample a at {repeated}:3 repeats "
        f"{repeated}:1"
    ]
