"""Datasets and loaders of a run, built from its config and the model's input shapes."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from ..data.audio import SpecAugment
from ..data.datasets import Annotations, parse_annotations
from ..data.datasets.video_dataset import VideoDataset
from ..data.sampling import build_sampler
from ..data.transforms import TrainTransform
from ..errors import ConfigError
from ..models import ModelConfig
from .config import RunConfig


def build_dataset(cfg: RunConfig, model_cfg: ModelConfig, split: str) -> tuple[VideoDataset, Annotations]:
    """The ``train`` or ``val`` dataset of a run (clips and audio shaped as the model takes them) and its
    parsed annotations (class counts and names)."""
    path = getattr(cfg.data, split)
    if not path:
        raise ConfigError(f"config key data.{split} is required (an annotation file)")
    train = split == "train"
    d = cfg.data
    annotations = parse_annotations(path, d.format, **d.options, **getattr(d, f"{split}_options"))
    kind = d.sampler or annotations.sampler
    clips = 1 if train else d.test_clips
    flip = annotations.flip if d.flip is None else d.flip
    with_audio = "audio" in model_cfg.experts
    dataset = VideoDataset(
        annotations, d.root, train=train, num_frames=model_cfg.num_frames, sampling_rate=d.sampling_rate,
        sampler=build_sampler(kind, model_cfg.num_frames, sampling_rate=d.sampling_rate, num_clips=clips),
        num_clips=clips, num_crops=1 if train else d.test_crops, size=model_cfg.img_size,
        transform=TrainTransform(model_cfg.img_size, scale=tuple(d.crop_scale), flip=flip, rand_augment=d.rand_augment,
                                 color_jitter=d.color_jitter, erase_prob=d.erase_prob) if train else None,
        flip=flip, with_audio=with_audio, audio_root=d.audio_root, audio_frames=model_cfg.audio_frames,
        audio_window=d.audio_window, spec_augment=SpecAugment() if (train and with_audio and d.spec_augment) else None,
        on_error=d.on_error if train else "exclude", missing_audio=d.missing_audio, seed=cfg.seed)
    return dataset, annotations


def build_loader(dataset: VideoDataset, batch_size: int, num_workers: int, sampler=None, drop_last: bool = False,
                 seed: int = 0) -> DataLoader:
    """A loader whose workers start afresh each epoch (so they see ``set_epoch``) and whose worker seeds
    come from their own generator (so loading never shifts the training random stream)."""
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers, drop_last=drop_last,
                      generator=torch.Generator().manual_seed(seed))
