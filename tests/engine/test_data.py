"""The data pipeline of a run: build_dataset gives exactly what the trainer and the evaluator iterate."""

import re
import time

import pytest
import torch

import ca2st
from ca2st.cli import main
from ca2st.data.datasets import Sample, VideoDataset
from ca2st.data.official_sampling import OfficialDenseSampler, OfficialSegmentSampler
from ca2st.data.sampling import SegmentSampler, build_sampler
from ca2st.data.transforms import EvalTransform, TrainTransform
from ca2st.engine import runner
from ca2st.engine import train as train_module
from ca2st.engine.config import load_config
from ca2st.engine.data import build_loader
from ca2st.errors import ConfigError, DataError
from dataset_media import make_video, write

from helpers import SMOKE_RECIPE, smoke_config, smoke_overrides


def assert_same_items(a, b, indices):
    for i in indices:
        (va, aa, ta, ma), (vb, ab, tb, mb) = a[i], b[i]
        torch.testing.assert_close(va, vb, rtol=0, atol=0)
        assert (aa is None) == (ab is None)
        if aa is not None:
            torch.testing.assert_close(aa, ab, rtol=0, atol=0)
        assert int(ta) == int(tb) and ma["id"] == mb["id"]
        torch.testing.assert_close(ma["times"], mb["times"])


def spy_loaders(monkeypatch, module, seen):
    real = module.build_loader

    def spy(dataset, *args, **kwargs):
        seen.append(dataset)
        return real(dataset, *args, **kwargs)

    monkeypatch.setattr(module, "build_loader", spy)


def test_build_dataset_gives_the_items_train_and_eval_consume(synthetic_data, tmp_path, monkeypatch):
    cfg = smoke_config(
        tmp_path / "run",
        "optim.epochs=1",
        f"data.val={synthetic_data.files['val']}",
        "data.test_clips=2",
        "data.test_crops=3",
        "model.name=cava_b16",
        "data.sampler=segment",
        f"data.options={{classes: {synthetic_data.files['classes']}}}",
        "eval_every=1",
        data=synthetic_data,
    )
    used = []
    spy_loaders(monkeypatch, train_module, used)
    spy_loaders(monkeypatch, runner, used)
    result = train_module.train(cfg)
    # ca2st eval without sampling or view settings: the checkpoint's recorded recipe (segment, 2 clips × 3 crops)
    plain = smoke_config(
        tmp_path / "eval",
        f"data.val={synthetic_data.files['val']}",
        "model.name=cava_b16",
        f"checkpoint={result.last_checkpoint}",
        data=synthetic_data,
    )
    assert plain.data.sampler is None and plain.data.test_clips is None
    runner.run_eval(plain, tmp_path / "eval")
    trained, validated, evaluated = used  # the training loader, the epoch-end evaluation, ca2st eval
    assert trained.train and not validated.train and not evaluated.train

    train_set = ca2st.build_dataset(cfg, "train")
    trained.set_epoch(0)
    assert isinstance(train_set.transform, TrainTransform) and train_set.sampler.kind == "segment"
    assert_same_items(train_set, trained, range(3))
    val_set = ca2st.build_dataset(cfg, "val")
    assert val_set[0][0].shape == (6, 3, 8, 32, 32) and val_set[0][1].shape == (6, 96, 128)
    assert_same_items(val_set, validated, range(len(val_set)))
    assert_same_items(val_set, evaluated, range(len(val_set)))

    # the checkpoint carries the recipe and the class names of the run
    model = ca2st.load_model(result.last_checkpoint)
    assert model.input_recipe.sampler == "segment" and model.input_recipe.num_views == 6
    assert model.class_names["class"] == synthetic_data.files["classes"].read_text().splitlines()


def test_build_dataset_takes_recipe_names_and_overrides(tmp_path):
    make_video(tmp_path / "a.mp4", 20, fps=10)
    listing = write(tmp_path / "ssv2.csv", "a.mp4 3\n")
    overrides = {
        "data.train": str(listing),
        "data.val": str(listing),
        "data.root": str(tmp_path),
        "data.num_workers": 0,
        "model.depth": 1,
        "model.num_frames": 4,
        "model.img_size": 32,
    }
    train_set = ca2st.build_dataset("cast_ssv2", "train", overrides)
    assert train_set.sampler.kind == "segment" and not train_set.transform.flip  # SSV2: the dataset's defaults
    video, audio, target, meta = train_set[0]
    assert video.shape == (3, 4, 32, 32) and audio is None and int(target) == 3
    val_set = ca2st.build_dataset("cast_ssv2", "val", overrides)
    assert isinstance(val_set.transform, EvalTransform) and val_set[0][0].shape == (6, 3, 4, 32, 32)
    k400 = ca2st.build_dataset("cast_k400", "train", {**overrides, "data.sampling_rate": 2})
    assert k400.sampler.kind == "dense" and k400.sampler.sampling_rate == 2 and k400.transform.flip
    with pytest.raises(ConfigError, match="split must be one of"):
        ca2st.build_dataset("cast_ssv2", "test", overrides)
    # the official input mode by default: the official loaders' views and resize
    assert isinstance(val_set.sampler, OfficialSegmentSampler) and val_set.sampler.num_clips == 2
    assert val_set.transform.truncate_long_side and val_set.transform.num_crops == 3
    k400_val = ca2st.build_dataset("cast_k400", "val", overrides)
    assert isinstance(k400_val.sampler, OfficialDenseSampler) and k400_val.num_views == 15
    native = ca2st.build_dataset("cast_ssv2", "val", {**overrides, "data.input_mode": "native"})
    assert isinstance(native.sampler, SegmentSampler) and not native.transform.truncate_long_side


class HangingDataset(VideoDataset):
    """Sample 1 hangs (sleeps a minute); the others load at once."""

    def __getitem__(self, index):
        if index == 1:
            time.sleep(60)
        return torch.zeros(2), None, torch.tensor(0), {"index": index}


def hanging_dataset(tmp_path):
    samples = [Sample(id=f"clip{i}", path=f"clip{i}.mp4", source=f"list.txt:{i + 1}") for i in range(3)]
    return HangingDataset(samples, tmp_path, build_sampler("dense", 4), None, train=True)


def test_a_hung_sample_ends_the_loader_with_a_data_error_naming_it(tmp_path):
    loader = build_loader(hanging_dataset(tmp_path), 1, num_workers=1, sample_timeout=1.5)
    started = time.monotonic()
    batches = iter(loader)
    assert int(next(batches)[3]["index"]) == 0
    with pytest.raises(DataError, match=r"clip1\.mp4 \(sample clip1, list\.txt:2\) has been loading for") as err:
        next(batches)
    assert "data.sample_timeout=1.5 s" in str(err.value)
    assert time.monotonic() - started < 20  # the hung worker is stopped, not waited for


def test_sample_timeout_is_checked_and_zero_means_none(tmp_path):
    with pytest.raises(ConfigError, match="config key data.sample_timeout must be at least 0 seconds"):
        load_config("smoke", ["data.sample_timeout=-1"])
    assert build_loader(hanging_dataset(tmp_path), 2, num_workers=1, sample_timeout=0).timeout == 0
    assert build_loader(hanging_dataset(tmp_path), 2, num_workers=1, sample_timeout=3).timeout == 6  # per batch
    assert build_loader(hanging_dataset(tmp_path), 2, num_workers=0, sample_timeout=3).timeout == 0


def test_a_worker_data_error_reaches_the_user_as_one_line(synthetic_data, tmp_path, capsys):
    listing = write(tmp_path / "train.txt", "".join(f"class0/missing{i}.mp4 0\n" for i in range(4)))
    args = smoke_overrides(tmp_path / "run", f"data.root={synthetic_data.root}", f"data.train={listing}")
    assert main(["train", str(SMOKE_RECIPE), *args, "data.num_workers=1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.match(r"error: \S+/class0/missing\d\.mp4: video file not found \(sample", err)
    assert "Traceback" not in err and "DataLoader" not in err


def test_batches_for_a_gpu_come_in_pinned_memory(tmp_path):
    dataset = hanging_dataset(tmp_path)
    assert build_loader(dataset, 2, num_workers=0, device="cuda:0").pin_memory
    assert not build_loader(dataset, 2, num_workers=0).pin_memory
