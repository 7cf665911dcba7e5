"""Shareable model folders: save_pretrained / from_pretrained, the model card and the expert hashes."""

import hashlib
import json

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

import ca2st
from ca2st.errors import CheckpointError

from helpers import randomize_, tiny_overrides

NAMES = [f"action {i}" for i in range(7)]
RESULTS = {"dataset": "tiny-ssv2", "metrics": {"top1": 0.625, "top5": 0.875}, "views": 2, "metric_scale": "fraction"}


def write_experts(model, folder):
    """Each expert's weights in a file of its own (ca2st's layout), as a user's downloaded expert files."""
    folder.mkdir(exist_ok=True)
    paths = {}
    for kind, expert in model.experts.items():
        paths[kind] = folder / f"{kind}.safetensors"
        save_file({f"experts.{kind}.{k}": v.contiguous() for k, v in expert.state_dict().items()}, str(paths[kind]))
    return paths


@pytest.fixture
def saved(tmp_path, monkeypatch):
    for env in ("CLIP_PATH", "VMAE_PATH", "AST_PATH"):
        monkeypatch.delenv(env, raising=False)
    model = randomize_(ca2st.build_model("cast_b16", **tiny_overrides())).eval()
    model.class_names = NAMES
    experts = write_experts(model, tmp_path / "experts")
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "results.json").write_text(json.dumps(RESULTS))
    folder = model.save_pretrained(
        tmp_path / "shared",
        experts=experts,
        results=tmp_path / "eval" / "results.json",
        tags=["ssv2"],
        name="someone/tiny-cast",
        model_name="cast_b16",
    )
    return model, experts, folder


def test_round_trip_gives_identical_outputs(saved, tmp_path):
    model, experts, folder = saved
    moved = tmp_path / "clip-copy.safetensors"
    experts["spatial"].rename(moved)  # the recorded source is gone here: the argument names the file
    loaded = ca2st.from_pretrained(folder, experts={"spatial": moved})
    assert loaded.class_names == {"class": NAMES} and loaded.input_recipe == model.input_recipe
    video = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(video), model(video), rtol=0, atol=0)


def test_folder_holds_trainable_weights_hashes_and_no_expert_weights(saved):
    model, experts, folder = saved
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors", "results.json"]
    stored = set(load_file(str(folder / "model.safetensors")))
    assert stored == {n for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and not stored & frozen
    record = json.loads((folder / "config.json").read_text())
    for kind, path in experts.items():
        ref = record["expert_files"][kind]
        assert ref == {
            "name": path.name,
            "source": str(path),
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        }


def test_model_card(saved):
    _, experts, folder = saved
    card = (folder / "README.md").read_text()
    assert card.startswith("---\n")
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["library_name"] == "ca2st" and meta["pipeline_tag"] == "video-classification"
    assert meta["license"] == "apache-2.0" and {"video-classification", "ssv2"} <= set(meta["tags"])
    assert "| top-1 | 62.50 |" in card and "| top-5 | 87.50 |" in card and "tiny-ssv2" in card
    assert "`action 6`" in card and "class (7)" in card
    assert "# someone/tiny-cast" in card and "model preset: `cast_b16`" in card
    assert 'ca2st.from_pretrained("someone/tiny-cast", experts={"spatial": "spatial.safetensors", "temporal": ' in card
    assert hashlib.sha256(experts["temporal"].read_bytes()).hexdigest() in card
    assert "- experts: spatial (clip), temporal (videomae); tasks: class (7 classes)" in card
    assert f"`{hashlib.sha256(experts['temporal'].read_bytes()).hexdigest()}` | CC-BY-NC-4.0 (VideoMAE) |" in card


def test_many_classes_are_counted_not_listed(tmp_path, monkeypatch):
    monkeypatch.setattr("ca2st.checkpoints.model_card.LISTED_CLASSES", 5)
    model = ca2st.build_model("cast_b16", **tiny_overrides())
    model.class_names = NAMES
    url = "https://example.org/clip.safetensors"
    experts = write_experts(model, tmp_path / "e")
    folder = model.save_pretrained(tmp_path / "m", experts=experts, sources={"spatial": url}, license="mit")
    card = (folder / "README.md").read_text()
    record = json.loads((folder / "config.json").read_text())
    assert record["expert_files"]["spatial"]["source"] == url and record["experts"]["spatial"] == str(
        experts["spatial"]
    )
    assert f"| spatial | spatial.safetensors | {url} |" in card
    assert ca2st.load_model(folder).tasks == {"class": 7}  # the record's local paths still serve load_model
    assert "class: 7 classes, listed in `config.json`" in card and "action 6" not in card
    assert "license: mit" in card and "## Results" not in card


def test_a_wrong_expert_file_is_refused_naming_it(saved, tmp_path, monkeypatch):
    model, experts, folder = saved
    other = randomize_(ca2st.build_model("cast_b16", **tiny_overrides()))
    wrong = write_experts(other, tmp_path / "other")["temporal"]
    expected = hashlib.sha256(experts["temporal"].read_bytes()).hexdigest()
    found = hashlib.sha256(wrong.read_bytes()).hexdigest()
    with pytest.raises(CheckpointError, match=rf"{wrong}: is not the temporal expert file.*{expected}.*{found}"):
        ca2st.from_pretrained(folder, experts={"temporal": wrong})
    experts["temporal"].unlink()
    monkeypatch.setenv("VMAE_PATH", str(wrong))  # the environment's file is checked too
    with pytest.raises(CheckpointError, match=rf"{wrong}: is not the temporal expert file"):
        ca2st.from_pretrained(folder)
    monkeypatch.delenv("VMAE_PATH")
    with pytest.raises(CheckpointError, match=r"needs the temporal expert's weights 'temporal.safetensors'"):
        ca2st.from_pretrained(folder)


def test_hashes_are_cached_per_path_size_and_mtime(tmp_path, monkeypatch):
    from ca2st.checkpoints import expert_files

    path = tmp_path / "w.bin"
    path.write_bytes(b"a" * 3_000_000)
    reads = []
    real = expert_files._hash_one
    monkeypatch.setattr(expert_files, "_hash_one", lambda p, d: (reads.append(p), real(p, d)))
    first = expert_files.file_sha256(path)
    assert first == hashlib.sha256(path.read_bytes()).hexdigest() and expert_files.file_sha256(path) == first
    assert len(reads) == 1
    path.write_bytes(b"b" * 3_000_001)
    assert expert_files.file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest() and len(reads) == 2


def test_a_weight_folder_is_hashed_by_its_files(tmp_path):
    from ca2st.checkpoints.expert_files import file_sha256

    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text("{}")
    (tmp_path / "hf" / "model.safetensors").write_bytes(b"x" * 10)
    first = file_sha256(tmp_path / "hf")
    (tmp_path / "hf" / "model.safetensors").write_bytes(b"y" * 11)  # the folder's own mtime does not change
    assert file_sha256(tmp_path / "hf") != first
    with pytest.raises(CheckpointError, match="missing: expert weight file not found"):
        file_sha256(tmp_path / "missing")


def test_save_needs_the_expert_files(tmp_path, monkeypatch):
    for env in ("CLIP_PATH", "VMAE_PATH", "AST_PATH"):
        monkeypatch.delenv(env, raising=False)
    model = ca2st.build_model("cast_b16", **tiny_overrides())
    with pytest.raises(CheckpointError, match=r"pass experts=\{'spatial': file\} .* or set CLIP_PATH"):
        model.save_pretrained(tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_an_unavailable_hub_id_is_named(monkeypatch, tmp_path):
    pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match=r"someone/no-such-ca2st-model: not a local folder.*HF_HUB_OFFLINE"):
        ca2st.from_pretrained("someone/no-such-ca2st-model")
    with pytest.raises(CheckpointError, match=r"not/a/hub/id: neither a model folder nor a Hub id"):
        ca2st.from_pretrained("not/a/hub/id")


def test_a_hub_id_downloads_only_the_model_files(saved, tmp_path, monkeypatch):
    """A Hub repository may hold much else (training logs, other checkpoints): only the folder's files come down,
    and they suffice to load the model."""
    hub = pytest.importorskip("huggingface_hub")
    import fnmatch
    import shutil

    model, experts, folder = saved
    (folder / "runs").mkdir()
    (folder / "runs" / "checkpoint-last.pt").write_bytes(b"\0" * 1000)
    calls = []

    def fake_snapshot_download(repo_id, revision=None, allow_patterns=None, **kw):
        calls.append((repo_id, revision, allow_patterns))
        local = tmp_path / "hub-cache" / repo_id.replace("/", "--")
        for path in folder.rglob("*"):
            rel = path.relative_to(folder).as_posix()
            if path.is_file() and any(fnmatch.fnmatch(rel, p) for p in allow_patterns or ["*"]):
                (local / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, local / rel)
        return str(local)

    monkeypatch.setattr(hub, "snapshot_download", fake_snapshot_download)
    loaded = ca2st.from_pretrained("someone/tiny-cast", experts=experts, revision="v1")
    [(repo_id, revision, patterns)] = calls
    assert (repo_id, revision) == ("someone/tiny-cast", "v1")
    local = tmp_path / "hub-cache" / "someone--tiny-cast"
    assert sorted(p.name for p in local.iterdir()) == ["README.md", "config.json", "model.safetensors", "results.json"]
    video = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(video), model(video), rtol=0, atol=0)
