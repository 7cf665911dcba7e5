"""The TorchScript reader caps what an archive may decompress: a zip bomb is refused by its declared sizes."""

import zipfile

import pytest
import torch

import ca2st.checkpoints.torchscript as torchscript
from ca2st.checkpoints.torchscript import read_torchscript_tensors
from ca2st.errors import CheckpointError


class Holder(torch.nn.Module):
    def __init__(self, numel: int):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(numel))

    def forward(self, x):
        return x * self.weight.sum()


def archive(tmp_path, numel: int, compression: int):
    """A real torch.jit archive of one zero tensor of ``numel`` floats, re-zipped with ``compression``."""
    saved = tmp_path / "saved.pt"
    torch.jit.script(Holder(numel)).save(str(saved))
    path = tmp_path / f"model-{compression}.pt"
    with zipfile.ZipFile(saved) as src, zipfile.ZipFile(path, "w", compression) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
    return path


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_a_highly_compressed_entry_is_refused_before_it_is_decompressed(tmp_path, monkeypatch):
    bomb = archive(tmp_path, 2 << 20, zipfile.ZIP_DEFLATED)  # 8 MiB of zeros in a file of a few KiB
    assert bomb.stat().st_size < 100_000
    assert read_torchscript_tensors(bomb)["weight"].shape == (2 << 20,)  # under the 64 MiB every archive may use
    monkeypatch.setattr(torchscript, "MIN_ALLOWANCE", 1 << 20)
    with pytest.raises(CheckpointError, match=r"model-8\.pt: entry \w+/data/0 of the TorchScript archive declares "):
        read_torchscript_tensors(bomb)
    stored = archive(tmp_path, 2 << 20, zipfile.ZIP_STORED)  # as torch.jit.save writes it: about its own size
    assert read_torchscript_tensors(stored)["weight"].shape == (2 << 20,)
