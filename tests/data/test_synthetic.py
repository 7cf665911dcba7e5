"""The synthetic audio-visual dataset of the demo: where its cues are, and that it is reused."""

import numpy as np

from ca2st.data.synthetic import CLASS_NAMES, SyntheticSpec, cues_of, render_frames, write_dataset


def test_synthetic_cues_are_where_they_should_be(tmp_path):
    rng = np.random.default_rng(0)
    spec = SyntheticSpec(size=32, num_frames=8)
    bright, dark = render_frames(0, 0, spec, rng), render_frames(0, 1, spec, rng)
    assert bright[-1].mean() > bright[0].mean() + 40 and dark[0].mean() > dark[-1].mean() + 40
    red, blue = render_frames(0, 0, spec, rng).reshape(-1, 3), render_frames(1, 0, spec, rng).reshape(-1, 3)
    assert (red[:, 0] > red[:, 2] + 100).any() and (blue[:, 2] > blue[:, 0] + 100).any()
    assert [cues_of(k) for k in (0, 5, 7)] == [(0, 0, 0), (1, 0, 1), (1, 1, 1)]
    files = write_dataset(tmp_path, SyntheticSpec(per_class_train=1, per_class_val=1, size=32, num_frames=8))
    assert len(files["train"].read_text().split("\n")) == len(CLASS_NAMES) + 1
    again = write_dataset(tmp_path, SyntheticSpec(per_class_train=1, per_class_val=1, size=32, num_frames=8))
    assert again == files  # reused, not rewritten
