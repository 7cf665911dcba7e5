"""The data pipeline of a run, built in one place: input recipe → sampler, transform, audio → dataset → loader.

``ca2st train``, ``ca2st eval``, ``ca2st predict`` and :func:`build_dataset` all build their datasets here, so
the items a user inspects are exactly the ones the trainer and evaluator consume.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from ..data.audio import SpecAugment
from ..data.datasets import Annotations, AudioSpec, Sample, VideoDataset, collate, parse_annotations
from ..data.recipe import InputRecipe
from ..data.sampling import build_sampler
from ..data.transforms import EvalTransform, TrainTransform
from ..errors import Ca2stError, ConfigError, DataError
from ..models import ModelConfig
from .config import DataConfig, RunConfig, load_config

SPLITS = ("train", "val")


def make_sampler(recipe: InputRecipe, train: bool):
    """The frame sampler of a recipe: one clip for training, ``test_clips`` views for evaluation."""
    return build_sampler(
        recipe.sampler,
        recipe.num_frames,
        sampling_rate=recipe.sampling_rate,
        num_clips=1 if train else recipe.test_clips,
        mode=recipe.mode,
    )


def make_transform(recipe: InputRecipe, train: bool, data: DataConfig | None = None, flip: bool = True):
    """The clip transform: ``data``'s augmentation for training, ``test_crops`` crops for evaluation. Clips come
    out as ``data.transfer`` says: uint8 pixels (the model normalises them on its device) or normalised float;
    random erasing (``erase_prob > 0``) always gives float clips."""
    data = data or DataConfig()
    if not train:
        return EvalTransform(
            recipe.img_size,
            recipe.test_crops,
            mean=recipe.mean,
            std=recipe.std,
            truncate_long_side=recipe.mode == "official",
            uint8_output=data.transfer == "uint8",
        )
    return TrainTransform(
        recipe.img_size,
        scale=tuple(data.crop_scale),
        flip=flip,
        rand_augment=data.rand_augment,
        color_jitter=data.color_jitter,
        erase_prob=data.erase_prob,
        mean=recipe.mean,
        std=recipe.std,
        uint8_output=data.transfer == "uint8" and data.erase_prob == 0,
    )


def audio_spec(recipe: InputRecipe, train: bool, data: DataConfig | None = None) -> AudioSpec | None:
    """What an audio model reads per sample (``None`` for a recipe without audio)."""
    if recipe.audio_frames is None:
        return None
    data = data or DataConfig()
    return AudioSpec(
        frames=recipe.audio_frames,
        window=data.audio_window,
        root=data.audio_root,
        missing=data.missing_audio,
        spec_augment=SpecAugment() if train and data.spec_augment else None,
    )


def recipe_of_run(
    cfg: RunConfig, model_config: ModelConfig, annotations: Annotations, recorded: InputRecipe | None = None
) -> InputRecipe:
    """The input recipe a run trains or evaluates with. Sampler, input mode, sampling rate, test clips and crops:
    the config's where it sets them; else, when evaluating a checkpoint, the recipe it ``recorded`` (its
    normalisation too); else the dataset's sampler, the official mode, rate 4, 2 clips and 3 crops."""
    d = cfg.data
    defaults = {
        "sampler": annotations.sampler,
        "mode": "official",
        "sampling_rate": 4,
        "test_clips": 2,
        "test_crops": 3,
    }
    fields = {}
    for name, default in defaults.items():
        value = getattr(d, "input_mode" if name == "mode" else name)
        fields[name] = value if value is not None else getattr(recorded, name) if recorded else default
    if recorded is not None:
        fields.update(mean=recorded.mean, std=recorded.std)
    return InputRecipe.for_model(model_config, **fields)


def dataset_of_run(
    cfg: RunConfig, split: str, model_config: ModelConfig | None = None, recorded: InputRecipe | None = None
) -> VideoDataset:
    """The ``train`` or ``val`` dataset of a run, shaped for ``model_config`` (default: the run's model), with the
    input recipe of :func:`recipe_of_run`."""
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {SPLITS}, got {split!r}")
    path = getattr(cfg.data, split)
    if not path:
        raise ConfigError(f"config key data.{split} is required (an annotation file)")
    model_config = model_config or cfg.model_config()[1]
    d, train = cfg.data, split == "train"
    annotations = parse_annotations(path, d.format, **d.options, **getattr(d, f"{split}_options"))
    recipe = recipe_of_run(cfg, model_config, annotations, recorded)
    flip = annotations.flip if d.flip is None else d.flip
    return VideoDataset(
        annotations,
        d.root,
        make_sampler(recipe, train),
        make_transform(recipe, train, d, flip),
        train=train,
        audio=audio_spec(recipe, train, d),
        on_error=d.on_error if train else "exclude",
        seed=cfg.seed,
        decoder=d.decoder,
        index_cache=d.index_cache,
    )


def build_dataset(
    recipe_or_config: str | RunConfig, split: str = "train", overrides: dict | Sequence[str] | None = None
) -> VideoDataset:
    """Exactly the dataset ``ca2st train`` (``split="train"``) or ``ca2st eval`` (``split="val"``) iterates.

    ``recipe_or_config``: a recipe name (``cast_ssv2``), a YAML path or a :class:`RunConfig`; ``overrides`` as
    for :func:`~ca2st.engine.config.load_config`. Items are ``(video, audio, target, meta)``, video as uint8 pixels
    (``model(video)`` and ``model.normalize_video`` normalise them; ``data.transfer=float``: float); evaluation items
    hold every view: video ``(views, 3, T, H, W)``.
    """
    if isinstance(recipe_or_config, RunConfig):
        cfg = recipe_or_config.with_overrides(overrides) if overrides else recipe_or_config
    else:
        cfg = load_config(recipe_or_config, overrides)
    return dataset_of_run(cfg, split)


def inference_dataset(
    samples: Sequence[Sample],
    recipe: InputRecipe,
    root=None,
    *,
    data: DataConfig | None = None,
    tasks: Sequence[str] | None = None,
    on_error: str = "exclude",
) -> VideoDataset:
    """Evaluation-mode dataset of ``samples`` under a model's ``recipe`` (``ca2st predict``); a broken file is
    excluded and reported (``on_error='exclude'``) or raises (``'error'``), never replaced."""
    return VideoDataset(
        samples,
        root,
        make_sampler(recipe, False),
        make_transform(recipe, False, data),
        audio=audio_spec(recipe, False, data),
        on_error=on_error,
        tasks=tasks,
        decoder=(data or DataConfig()).decoder,
    )


class LoaderDataset(Dataset):
    """A :class:`VideoDataset` as the loader's workers see it.

    In a worker, each item marks its slot of the shared ``in_flight`` table (sample index, start time) while it
    loads, so the main process can name a sample that hangs; and an error of ours (:class:`Ca2stError`) comes back
    as a :class:`LoadFailure` item, so the main process re-raises it with its own message instead of PyTorch's
    wrapped worker traceback. Outside workers (``num_workers=0``) items and errors pass through unchanged.
    """

    def __init__(self, dataset: VideoDataset, in_flight: torch.Tensor):
        self.dataset = dataset
        self.in_flight = in_flight

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        worker = get_worker_info()
        if worker is None:
            return self.dataset[index]
        slot = self.in_flight[worker.id]
        slot[0], slot[1] = index, time.time()
        try:
            return self.dataset[index]
        except Ca2stError as err:
            return LoadFailure(type(err), str(err))
        finally:
            slot[0] = -1


@dataclass(frozen=True)
class LoadFailure:
    """An error raised while a worker loaded a sample: its class and message."""

    kind: type
    message: str


def collate_or_failure(items):
    """:func:`collate`, or the batch's first :class:`LoadFailure` when one of its samples failed."""
    return next((x for x in items if isinstance(x, LoadFailure)), None) or collate(items)


class RunLoader(DataLoader):
    """A loader that ends cleanly on bad data: a sample's :class:`DataError` (or any :class:`Ca2stError`) raised
    in a worker is re-raised as itself, and when the workers deliver nothing for ``batch_size × sample_timeout``
    seconds the iteration ends with a :class:`DataError` naming the samples still loading. ``sample_timeout=0``
    waits forever; without workers there is no timeout."""

    def __init__(self, dataset: VideoDataset, batch_size: int, num_workers: int, *, sample_timeout: float, **kw):
        in_flight = torch.full((max(num_workers, 1), 2), -1.0, dtype=torch.float64).share_memory_()
        timeout = batch_size * sample_timeout if num_workers > 0 else 0
        super().__init__(
            LoaderDataset(dataset, in_flight),
            batch_size=batch_size,
            num_workers=num_workers,
            timeout=timeout,
            collate_fn=collate_or_failure,
            **kw,
        )
        self.videos, self.in_flight, self.sample_timeout = dataset, in_flight, sample_timeout

    def __iter__(self):
        self.in_flight[:, 0] = -1
        batches = super().__iter__()
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except RuntimeError as err:
                if not str(err).startswith("DataLoader timed out"):
                    raise
                failure = self.hung_samples_error()
            else:
                if not isinstance(batch, LoadFailure):
                    yield batch
                    continue
                failure = batch.kind(batch.message)
            del batches  # shut the workers down now (a hung one is terminated), not when the traceback goes
            raise failure

    def hung_samples_error(self) -> DataError:
        """The :class:`DataError` of a timed-out wait, naming each sample a worker is still loading."""
        now, hung = time.time(), []
        for index, started in self.in_flight.tolist():
            if index >= 0:
                sample = self.videos.samples[int(index)]
                where = f", {sample.source}" if sample.source else ""
                path = self.videos.resolve(sample.path, self.videos.root)
                hung.append(f"{path} (sample {sample.id}{where}) has been loading for {now - started:.0f} s")
        limit = f"data.sample_timeout={self.sample_timeout:g} s per sample, {self.timeout:g} s per batch"
        if not hung:
            return DataError(f"the loader's workers delivered nothing within {limit} and were loading no sample")
        return DataError(
            f"{'; '.join(hung)}: no batch within {limit}; the file may hang the decoder (check it with ca2st data "
            "check) or its storage may be stalled; raise data.sample_timeout if loading is just slow"
        )


def build_loader(
    dataset: VideoDataset,
    batch_size: int,
    num_workers: int,
    sampler=None,
    drop_last: bool = False,
    seed: int = 0,
    sample_timeout: float = DataConfig.sample_timeout,
    device: torch.device | str = "cpu",
) -> RunLoader:
    """A :class:`RunLoader` whose workers start afresh each epoch (so they see ``set_epoch``) and whose worker
    seeds come from their own generator (so loading never shifts the training random stream). Batches for a GPU
    ``device`` come in pinned memory, so their copies to it do not block."""
    return RunLoader(
        dataset,
        batch_size,
        num_workers,
        sample_timeout=sample_timeout,
        sampler=sampler,
        drop_last=drop_last,
        generator=torch.Generator().manual_seed(seed),
        pin_memory=torch.device(device).type == "cuda",
    )
