"""The training engine: layer decay, schedule, mixup, accumulation, resume, DDP, checkpoints, CLI."""

import json
import os
import shutil
import socket

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

import ca2st
from ca2st.data.synthetic import SyntheticSpec, write_dataset
from ca2st.engine.checkpointing import latest_checkpoint, load_model, save_checkpoint
from ca2st.engine.config import load_config
from ca2st.engine.optim import (VideoMixup, build_optimizer, build_scheduler, lr_scales, parameter_groups,
                                scheduled_lr)
from ca2st.engine.train import train
from ca2st.errors import CheckpointError, ConfigError


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    files = write_dataset(root, SyntheticSpec(per_class_train=1, per_class_val=1, size=32, num_frames=8))
    return root, files


def overrides(synth, out, *extra, model="cast_b16"):
    root, files = synth
    return [f"data.train={files['train']}", f"data.root={root}", "data.format=path_label",
            "data.options={num_classes: 8}", "data.batch_size=4", "data.num_workers=0", f"model.name={model}",
            "model.embed_dim=32", "model.depth=2", "model.num_heads=2", "model.num_frames=8", "model.img_size=32",
            "model.audio_frames=96", "optim.epochs=2", "optim.warmup_epochs=0.5", "optim.lr=0.5",
            "optim.mixup=0", f"output_dir={out}", "resume=null", "random_experts=true", "precision=fp32", "progress=false",
            "tensorboard=false", *extra]


def trainable(path):
    return load_file(str(path / "model.safetensors"))


def tiny_model(**kw):
    return ca2st.build_model("cast_b16", embed_dim=32, depth=3, num_heads=2, num_frames=4, img_size=32, **kw)


def test_layer_decay_assignment():
    scales = lr_scales(tiny_model(), 0.5)
    assert scales["experts.spatial.blocks.0.attn_adapter.fc1.weight"] == 0.5 ** 3
    assert scales["exchanges.0.spatial_temporal.attn_a.q_pos"] == 0.5 ** 3
    assert scales["experts.temporal.blocks.1.mlp_adapter.fc2.bias"] == 0.5 ** 2
    assert scales["exchanges.2.spatial_temporal.proj_b.up.weight"] == 0.5  # the top block: decay¹, as officially
    assert scales["experts.spatial.norm.weight"] == scales["head.fc.weight"] == scales["head.fuse.temporal.fc1.weight"] == 1
    assert not any(k.startswith("experts.spatial.patch_embed") or ".attn.qkv." in k for k in scales)  # frozen


def test_weight_decay_exemptions():
    model = tiny_model()
    names = {id(p): n for n, p in model.named_parameters()}
    decay = {names[id(p)]: g["weight_decay"] for g in parameter_groups(model, 0.05, 0.75) for p in g["params"]}
    assert decay["exchanges.1.spatial_temporal.attn_a.q.weight"] == 0.05
    assert decay["experts.spatial.blocks.0.mlp_adapter.fc1.weight"] == 0.05
    for name in ("exchanges.1.spatial_temporal.attn_a.q.bias", "exchanges.1.spatial_temporal.norm_a.weight",
                 "exchanges.1.spatial_temporal.attn_a.q_pos", "exchanges.1.spatial_temporal.attn_b.kv_pos",
                 "experts.temporal.norm.weight", "head.fc.bias"):
        assert decay[name] == 0.0, name
    assert len(decay) == sum(p.numel() > 0 for p in model.parameters() if p.requires_grad)


def test_time_codes_take_the_first_audio_layer_scale():
    model = ca2st.build_model("ca2st_b16", embed_dim=32, depth=4, num_heads=2, num_frames=4, img_size=32,
                              audio_frames=46, num_mel_bins=32, audio_layers=2)
    scales = lr_scales(model, 0.5)
    assert scales["time_codes.audio.mlp.0.weight"] == scales["exchanges.2.audio_spatial.attn_a.q.weight"] == 0.25


def test_schedule_values():
    model = tiny_model()
    opt = build_optimizer(model, 1.0, 0.05, 0.5)
    sched = build_scheduler(opt, lr=1.0, min_lr=0.01, total_steps=10, warmup_steps=4)
    top = [g for g in opt.param_groups if g["lr_scale"] == 1.0][0]
    block0 = [g for g in opt.param_groups if g["lr_scale"] == 0.125][0]
    expected = {0: 0.0, 1: 0.25, 2: 0.5, 4: 1.0, 7: 0.01 + 0.495 * (1 + torch.cos(torch.tensor(torch.pi * 3 / 6)).item())}
    for step, value in expected.items():
        sched.step_update(step)
        assert top["lr"] == pytest.approx(value, abs=1e-6), step
        assert block0["lr"] == pytest.approx(value * 0.125, abs=1e-6)
        assert scheduled_lr(step, 1.0, 0.01, 10, 4) == pytest.approx(value, abs=1e-6)
    sched.step_update(10)
    assert top["lr"] == pytest.approx(0.01, abs=1e-6)


def test_mixup_targets_single_and_composition():
    torch.manual_seed(0)
    video = torch.randn(4, 3, 2, 8, 8)
    audio = torch.randn(4, 10, 6)
    mix = VideoMixup(5, mixup_alpha=1.0, cutmix_alpha=0.0, prob=1.0, label_smoothing=0.0)
    target = torch.tensor([0, 1, 2, 3])
    v, t, a, lam = mix(video.clone(), target, audio.clone())
    assert 0 < lam < 1
    torch.testing.assert_close(v, lam * video + (1 - lam) * video.flip(0))
    torch.testing.assert_close(a, lam * audio + (1 - lam) * audio.flip(0))
    onehot = torch.nn.functional.one_hot(target, 5).float()
    torch.testing.assert_close(t, lam * onehot + (1 - lam) * onehot.flip(0))
    comp = VideoMixup({"verb": 3, "noun": 4}, mixup_alpha=1.0, prob=1.0, label_smoothing=0.1)
    targets = {"verb": torch.tensor([0, 1, 2, 0]), "noun": torch.tensor([3, 2, 1, 0])}
    _, t, _, lam = comp(video.clone(), targets)
    for task, n in (("verb", 3), ("noun", 4)):
        smooth = torch.nn.functional.one_hot(targets[task], n).float() * 0.9 + 0.1 / n
        torch.testing.assert_close(t[task], lam * smooth + (1 - lam) * smooth.flip(0))  # the same λ for both


def test_accumulation_divides_the_loss_once(synth, tmp_path):
    # a large Adam eps makes the first update proportional to the gradient, so its scale shows
    common = ["optim.epochs=1", "optim.warmup_epochs=0", "optim.eps=1.0"]
    a = train(load_config(None, overrides(synth, tmp_path / "a", *common, "data.batch_size=8", "optim.update_freq=1")))
    b = train(load_config(None, overrides(synth, tmp_path / "b", *common, "data.batch_size=4", "optim.update_freq=2")))
    init = ca2st.build_model("cast_b16", embed_dim=32, depth=2, num_heads=2, num_frames=8, img_size=32, num_classes=8)
    moved = max((trainable(a.last_checkpoint)[k] - v).abs().max().item()
                for k, v in init.state_dict().items() if k in trainable(a.last_checkpoint))
    assert moved > 1e-4
    wa, wb = trainable(a.last_checkpoint), trainable(b.last_checkpoint)
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-5, rtol=1e-4)


def test_resume_follows_the_same_trajectory(synth, tmp_path):
    extra = ["optim.mixup=0.8", "model.drop_path_rate=0.3", "save_every_steps=1", "keep_checkpoints=10",
             "optim.epochs=3", "data.batch_size=2", "optim.update_freq=2"]
    full = train(load_config(None, overrides(synth, tmp_path / "full", *extra)))
    losses = [h["loss"] for h in full.history if h["kind"] == "train"]
    assert len(losses) == 6  # 2 steps per epoch
    # "kill" after step 3 (mid-epoch 1): a fresh run directory holding only that checkpoint
    (tmp_path / "resumed").mkdir()
    shutil.copytree(tmp_path / "full" / "checkpoint-00000003", tmp_path / "resumed" / "checkpoint-00000003")
    assert latest_checkpoint(tmp_path / "resumed").name == "checkpoint-00000003"
    resumed = train(load_config(None, overrides(synth, tmp_path / "resumed", *extra, "resume=auto")))
    assert [h["loss"] for h in resumed.history if h["kind"] == "train"] == losses[3:]
    final, again = trainable(full.last_checkpoint), trainable(resumed.last_checkpoint)
    assert all(torch.equal(final[k], again[k]) for k in final)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, args):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    train(load_config(None, args))


def test_ddp_two_processes_equal_one_process(synth, tmp_path):
    common = ["optim.epochs=1", "optim.warmup_epochs=0", "data.num_workers=0"]
    single = train(load_config(None, overrides(synth, tmp_path / "single", *common, "data.batch_size=4")))
    args = overrides(synth, tmp_path / "ddp", *common, "data.batch_size=2")
    mp.spawn(_ddp_worker, args=(2, _free_port(), args), nprocs=2, join=True)
    ddp = latest_checkpoint(tmp_path / "ddp")
    one, two = trainable(single.last_checkpoint), trainable(ddp)
    assert ddp.name == single.last_checkpoint.name  # the same number of optimizer steps
    for k in one:
        torch.testing.assert_close(two[k], one[k], atol=1e-5, rtol=1e-4)


def test_checkpoints_are_atomic_and_load_model_rebuilds(synth, tmp_path):
    model = tiny_model().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.1)
    path = save_checkpoint(tmp_path / "ckpt", model, model_name="cast_b16", include_experts=True)
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind
    video = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(load_model(path)(video), model(video))
    light = save_checkpoint(tmp_path / "light", model, model_name="cast_b16")
    with pytest.raises(CheckpointError, match="the spatial expert's weights are needed"):
        load_model(light)


def test_failed_write_leaves_the_old_checkpoint(tmp_path, monkeypatch):
    model = tiny_model()
    path = save_checkpoint(tmp_path / "ckpt", model, model_name="cast_b16")
    before = (path / "model.safetensors").read_bytes()
    import ca2st.engine.checkpointing as ck

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(ck, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path / "ckpt", model, model_name="cast_b16")
    assert (path / "model.safetensors").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_config_errors_name_the_key(synth, tmp_path):
    with pytest.raises(ConfigError, match="unknown config key optim.learning_rate"):
        load_config(None, ["optim.learning_rate=1"])
    with pytest.raises(ConfigError, match="config key optim.epochs must be a number"):
        load_config(None, ["optim.epochs=many"])
    with pytest.raises(ConfigError, match=r"unknown model option\(s\) \['depht'\]"):
        load_config(None, ["model.depht=3"])
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="config key data.train is required"):
        train(load_config(None, [f"output_dir={tmp_path}", "model.embed_dim=32", "model.num_heads=2"]))
    no_weights = [o for o in overrides(synth, tmp_path / "x") if not o.startswith("random_experts")]
    with pytest.raises(ConfigError, match="no weights for the spatial expert: set experts.spatial or .* CLIP_PATH"):
        train(load_config(None, no_weights))


def test_cli_train_smoke(synth, tmp_path, capsys, monkeypatch):
    from ca2st.cli import main
    from ca2st.engine import train as train_module
    settings = []  # CPU training fixes glibc's thresholds (tested in test_host_memory), here recorded only
    monkeypatch.setattr(train_module, "keep_freed_memory", lambda: settings.append(True) or True)
    assert main(["train", *overrides(synth, tmp_path / "cli", "optim.epochs=1", model="ca2st_b16"),
                 "model.audio_layers=1"]) == 0
    out = capsys.readouterr().out
    assert "last checkpoint:" in out and (tmp_path / "cli" / "metrics.jsonl").exists()
    assert settings == [True]


def test_eval_cli_writes_results(synth, tmp_path, capsys):
    from ca2st.cli import main
    root, files = synth
    args = overrides(synth, tmp_path / "run", "optim.epochs=1", f"data.val={files['val']}", "data.test_clips=2",
                     "data.test_crops=3")
    result = train(load_config(None, args))
    evals = [h for h in result.history if h["kind"] == "eval"]
    assert len(evals) == 1 and 0 <= evals[0]["top1"] <= 1
    assert (tmp_path / "run" / "checkpoint-best").exists()
    assert main(["eval", *args, f"checkpoint={result.last_checkpoint}", "--out", str(tmp_path / "ev")]) == 0
    out = capsys.readouterr().out
    assert "top1" in out.lower() or "top-1" in out.lower()
    saved = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert saved["metrics"]["top1"] == pytest.approx(evals[0]["top1"])


def test_ema_tracks_only_trainable_weights():
    from ca2st.engine.optim import TrainableEMA
    model = tiny_model()
    ema = TrainableEMA(model, decay=0.5)
    assert all(model.get_parameter(n).requires_grad for n in ema.names)
    head = model.head.fc.weight
    start = head.detach().clone()
    with torch.no_grad():
        head.add_(1.0)
    ema.update(model)
    torch.testing.assert_close(ema.state_dict()["head.fc.weight"], start + 0.5)
    ema.copy_to(model)
    torch.testing.assert_close(model.head.fc.weight, start + 0.5)


def test_bf16_training_with_ema_and_checkpointing(synth, tmp_path):
    result = train(load_config(None, overrides(synth, tmp_path / "bf16", "optim.epochs=1", "precision=bf16",
                                               "optim.ema=0.9", "grad_checkpointing=true", "optim.clip_grad=1.0",
                                               model="cava_b16")))
    losses = [h["loss"] for h in result.history if h["kind"] == "train"]
    assert losses and all(torch.isfinite(torch.tensor(losses)))
    assert "ema" in torch.load(result.last_checkpoint / "state.pt", weights_only=True)
