import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from ca2st.data.synthetic import SyntheticSpec, write_dataset  # noqa: E402  (after the offline switches)

from helpers import REPO, SyntheticData  # noqa: E402

FIXTURES = Path(os.environ.get("CA2ST_FIXTURES", REPO.parent / "shared" / "fixtures"))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.skip(f"official fixtures folder {FIXTURES} is absent (set CA2ST_FIXTURES to its path)")
    return FIXTURES


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory) -> SyntheticData:
    """The synthetic 8-class dataset, one training and one validation clip per class (8 frames of 32x32),
    written once per session; configs/smoke.yaml trains on it (``helpers.smoke_config(..., data=...)``)."""
    root = tmp_path_factory.mktemp("synthetic")
    return SyntheticData(
        root, write_dataset(root, SyntheticSpec(per_class_train=1, per_class_val=1, size=32, num_frames=8))
    )
