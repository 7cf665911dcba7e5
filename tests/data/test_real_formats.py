"""Annotation files written in the layouts the datasets really ship: HD-EPIC's narrations exported to CSV, the CVDF
Kinetics CSVs and their class file, the EPIC-SOUNDS test file, VGG-Sound without a class file, and selections
(split, subset, subset classes) that match nothing."""

import json
import logging
import shlex
import subprocess
import sys

import pytest

from ca2st.cli import main
from ca2st.data.datasets import guess_format, load_class_map, parse_annotations
from ca2st.data.datasets.vggsound import CLASS_FILE_RECIPE
from ca2st.errors import ConfigError, DataError
from dataset_media import write

# the 16 columns of HD_EPIC_Narrations.pkl, as pandas' to_csv(index=False) writes them
HD_COLUMNS = (
    "unique_narration_id,participant_id,video_id,narration,start_timestamp,end_timestamp,nouns,verbs,pairs,"
    "main_actions,verb_classes,noun_classes,pair_classes,main_action_classes,hands,narration_timestamp\n"
)


def hd_row(k: int, verbs: str, nouns: str, pairs: str, main: str) -> str:
    return (
        f"P01-20240202-110250-{k},P01,P01-20240202-110250,Narration {k},{k}.5,{k + 1}.25,\"['cupboard']\","
        f'"[\'open\']","[(\'open\', \'cupboard\')]","[(\'open\', \'cupboard\')]","{verbs}","{nouns}","{pairs}",'
        f'"{main}","[\'left hand\']",{k}.0\n'
    )


@pytest.fixture
def hd_epic(tmp_path):
    return write(
        tmp_path / "HD_EPIC_Narrations.csv",
        HD_COLUMNS
        + hd_row(1, "[3, 34]", "[3, 3]", "[(3, 3), (34, 3)]", "[(3, 3)]")
        + hd_row(2, "[101]", "[12]", "[(101, 12)]", "[(101, 12)]")  # HD-only verb
        + hd_row(3, "[0]", "[301]", "[(0, 301)]", "[(0, 301)]")  # HD-only noun
        + hd_row(4, "[5, 8]", "[7]", "[(5, 7)]", "[]")  # no main action: falls back to verb/noun classes
        + hd_row(5, "[]", "[]", "[]", "[]")  # nothing to fall back to
        + hd_row(6, "[101]", "[2]", "[(101, 2)]", "[(101, 2)]"),
    )


def test_hd_epic_reads_ek100_ids_and_reports_hd_only_classes(hd_epic, caplog):
    assert guess_format(hd_epic) == "hd_epic"
    with caplog.at_level(logging.WARNING):
        a = parse_annotations(hd_epic)
    assert a.num_classes == {"verb": 97, "noun": 300}
    assert [(s.id[-1], s.label) for s in a] == [("1", {"verb": 3, "noun": 3}), ("4", {"verb": 5, "noun": 7})]
    reasons = [reason for _, reason in a.excluded]
    assert [where.rsplit(":", 1)[1] for where, _ in a.excluded] == ["3", "4", "6", "7"]
    assert reasons.count("HD-only verb 101 (not an EK100 class)") == 2
    assert "HD-only noun 301 (not an EK100 class)" in reasons
    assert "no main action and no verb/noun class" in reasons
    message = caplog.text
    assert "4 of 6 HD-EPIC narrations left out" in message and "HD-only verb 101 (not an EK100 class): 2" in message

    own = parse_annotations(hd_epic, "hd_epic", num_classes={"verb": 106, "noun": 303})  # HD-EPIC's own classes
    assert [s.label["verb"] for s in own] == [3, 101, 0, 5, 101] and len(own.excluded) == 1

    mapping = write(hd_epic.with_name("m.csv"), "kind,source_class,target_class\nverb,3,1\nverb,5,2\nnoun,3,4\n")
    mapped = parse_annotations(hd_epic, "hd_epic", mapping=mapping)  # an explicit mapping still works
    assert [s.label for s in mapped] == [{"verb": 1, "noun": 4}] and len(mapped.excluded) == 5


def test_hd_epic_empty_main_action_without_class_columns_is_left_out(tmp_path):
    f = write(
        tmp_path / "narrations.csv",
        "unique_narration_id,participant_id,video_id,start_timestamp,end_timestamp,main_action_classes\n"
        'a,P01,v,1.0,2.0,"[(4, 9)]"\nb,P01,v,3.0,4.0,[]\n',
    )
    a = parse_annotations(f, "hd_epic")
    assert [s.label for s in a] == [{"verb": 4, "noun": 9}] and a.excluded[0][0].endswith("narrations.csv:3")


def test_hd_epic_out_of_range_class_is_still_an_error(tmp_path):
    f = write(tmp_path / "n.csv", HD_COLUMNS + hd_row(1, "[200]", "[1]", "[(200, 1)]", "[(200, 1)]"))
    with pytest.raises(DataError, match=r"n\.csv:2: verb 200 is out of range: expected 0..96"):
        parse_annotations(f, "hd_epic")


def test_data_check_num_classes_on_hd_epic_is_a_clear_error(hd_epic, capsys):
    with pytest.raises(ConfigError, match=r"'hd_epic': option num_classes=97 has the wrong type.*dict\[str, int\]"):
        parse_annotations(hd_epic, "hd_epic", num_classes=97)
    assert main(["data", "check", str(hd_epic), "--num-classes", "97", "--no-decode", "-q"]) == 2
    assert "num_classes=97 has the wrong type" in capsys.readouterr().err


def test_hd_epic_sounds_reads_epic_sounds_ids(tmp_path):
    f = write(
        tmp_path / "HD_EPIC_Sounds.csv",
        "participant_id,video_id,start_timestamp,stop_timestamp,start_sample,stop_sample,class,class_id\n"
        "P01,P01-20240202-110250,00:00:00.476,00:00:02.520,22848,120960,rustle,4\n",
    )
    a = parse_annotations(f)
    assert a.format == "hd_epic_sounds" and a.num_classes == 44 and a[0].label == 4


# ------------------------------------------------------------------ Kinetics (CVDF copies)


CVDF_HEADER = '"label","youtube_id","time_start","time_end","split","is_cc"\n'


def test_cvdf_kinetics_csv_and_class_file(tmp_path):
    f = write(
        tmp_path / "validate.csv",
        CVDF_HEADER + '"zumba","-0DvBEyk5CY",20,30,"validate",0\n"abseiling","0wR5jVB-WPk",417,427,"validate",0\n',
    )
    assert guess_format(f) == "kinetics"
    classes = write(tmp_path / "kinetics_400_labels.csv", "id,name\n0,abseiling\n1,air drumming\n2,zumba\n")
    assert load_class_map(classes) == ["abseiling", "air drumming", "zumba"]
    a = parse_annotations(f, classes=classes)
    assert [(s.id, s.label) for s in a] == [("-0DvBEyk5CY_000020_000030", 2), ("0wR5jVB-WPk_000417_000427", 0)]
    names = write(tmp_path / "names.txt", "name\nabseiling\nair drumming\nzumba\n")
    assert load_class_map(names) == ["abseiling", "air drumming", "zumba"]


def test_kinetics_sound_warns_about_subset_classes_without_rows(tmp_path, caplog):
    subset = write(tmp_path / "ks.txt", "playing drums\nabseiling\nplaying bagpipes\n")
    f = write(tmp_path / "train.csv", CVDF_HEADER + '"abseiling","a",0,10,"train",0\n"zumba","b",0,10,"train",0\n')
    with caplog.at_level(logging.WARNING):
        a = parse_annotations(f, "kinetics_sound", classes=subset)
    assert [s.label for s in a] == [1]
    assert "2 of the 3 classes" in caplog.text and "'playing drums', 'playing bagpipes'" in caplog.text


# ------------------------------------------------------------------ selections that match nothing


def test_split_or_subset_that_matches_no_row_names_the_values(tmp_path):
    classes = write(tmp_path / "classes.txt", "dog barking\n")
    vgg = write(tmp_path / "vggsound.csv", "a,1,dog barking,train\nb,2,dog barking,test\n")
    with pytest.raises(DataError, match=r"split='val' matches no row; the file's split values are 'test', 'train'"):
        parse_annotations(vgg, "vggsound", classes=classes, split="val")
    anet = write(
        tmp_path / "activity_net.v1-3.min.json",
        json.dumps({"database": {"x": {"subset": "validation", "annotations": []}}}),
    )
    with pytest.raises(DataError, match=r"subset='valid' matches no row; the file's subset values are 'validation'"):
        parse_annotations(anet, "activitynet", classes=classes, subset="valid")


# ------------------------------------------------------------------ EPIC-SOUNDS test file, VGG-Sound class order


def test_epic_sounds_test_file_is_guessed_and_unlabelled(tmp_path):
    f = write(
        tmp_path / "EPIC_Sounds_recognition_test_timestamps.csv",
        "annotation_id,participant_id,video_id,start_timestamp,stop_timestamp,start_sample,stop_sample\n"
        "P01_101_0,P01,P01_101,00:00:00.000,00:00:01.500,0,36000\n",
    )
    assert guess_format(f) == "epic_sounds"
    a = parse_annotations(f)
    assert a[0].label is None and a[0].end == pytest.approx(1.5)


def test_vggsound_without_classes_says_which_order_and_the_recipe_makes_it(tmp_path):
    f = write(tmp_path / "vggsound.csv", 'a,1,"dog barking, growling",train\nb,2,cat purring,test\nc,3,airplane,test\n')
    with pytest.raises(DataError, match="ships no such file; the recipes expect the class names sorted"):
        parse_annotations(f, "vggsound")
    command = CLASS_FILE_RECIPE.replace("python", shlex.quote(sys.executable), 1)
    subprocess.run(command, shell=True, cwd=tmp_path, check=True)
    assert load_class_map(tmp_path / "classes.txt") == ["airplane", "cat purring", "dog barking, growling"]
    a = parse_annotations(f, "vggsound", classes=tmp_path / "classes.txt")
    assert [s.label for s in a] == [2, 1, 0]


def test_ucf101_lists_of_mp4_files_are_guessed(tmp_path):
    from ca2st.data.datasets import guess_format

    mp4 = tmp_path / "a" / "trainlist01.txt"
    mp4.parent.mkdir()
    mp4.write_text("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.mp4 1\n")
    assert guess_format(mp4) == "ucf101"
    plain = tmp_path / "b" / "list.txt"
    plain.parent.mkdir()
    plain.write_text("clips/0001.mp4 3\n")
    assert guess_format(plain) == "path_label"
    (plain.parent / "classInd.txt").write_text("1 ApplyEyeMakeup\n")  # the official class file beside the list
    assert guess_format(plain) == "ucf101"
