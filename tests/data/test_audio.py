"""Log-mel features (parity with transformers' ASTFeatureExtractor), the resampler, and SpecAugment."""

import math

import pytest
import torch

from ca2st.data.audio import AUDIOSET_MEAN, AUDIOSET_STD, SpecAugment, log_mel, mel_banks, resample
from ca2st.data.decode import read_audio
from media import bigbuckbunny


@pytest.fixture(scope="module")
def bunny_audio() -> torch.Tensor:
    return read_audio(bigbuckbunny(), sample_rate=16000)


@pytest.fixture(scope="module")
def extractor():
    transformers = pytest.importorskip("transformers")
    return transformers.ASTFeatureExtractor()


def _reference(extractor, wave: torch.Tensor, num_frames: int, normalize: bool = True) -> torch.Tensor:
    extractor.max_length, extractor.do_normalize = num_frames, normalize
    out = extractor(wave.numpy(), sampling_rate=16000, return_tensors="pt")["input_values"][0]
    return out


# ------------------------------------------------------------------------------------------ log-mel parity


@pytest.mark.filterwarnings("ignore:At least one mel filter")
@pytest.mark.parametrize("num_frames", [1024, 400])
def test_log_mel_matches_ast_feature_extractor_on_real_audio(bunny_audio, extractor, num_frames):
    # 5.31 s of audio = 529 frames: 1024 pads at the end, 400 crops the first window (as the extractor does).
    ours = log_mel(bunny_audio, num_frames=num_frames)
    ref = _reference(extractor, bunny_audio, num_frames)
    assert ours.shape == ref.shape == (num_frames, 128)
    assert ours.dtype == torch.float32
    assert (ours - ref).abs().max().item() <= 1e-3
    assert (ours - ref).abs().max().item() <= 1e-5  # in fact float64 arithmetic agrees to rounding


@pytest.mark.filterwarnings("ignore:At least one mel filter")
def test_log_mel_short_clip_padding_and_raw_values(bunny_audio, extractor):
    clip = bunny_audio[16000 : 16000 + 8000]  # 0.5 s -> 48 frames, padded to 100
    ours = log_mel(clip, num_frames=100)
    ref = _reference(extractor, clip, 100)
    assert (ours - ref).abs().max().item() <= 1e-3
    assert torch.allclose(ours[48:], torch.full((52, 128), -AUDIOSET_MEAN / (2 * AUDIOSET_STD)))
    raw = log_mel(clip, num_frames=100, normalize=False)
    assert (raw - _reference(extractor, clip, 100, normalize=False)).abs().max().item() <= 1e-3
    assert torch.equal(raw[48:], torch.zeros(52, 128))


@pytest.mark.filterwarnings("ignore:At least one mel filter")
def test_log_mel_parity_on_silence_and_noise(extractor):
    g = torch.Generator().manual_seed(1)
    wave = 0.05 * torch.randn(16000 * 2, generator=g)
    wave[4000:12000] = 0.0  # digital silence hits the log floor
    wave[20000:] *= 1e-4  # very quiet
    assert (log_mel(wave, num_frames=300) - _reference(extractor, wave, 300)).abs().max().item() <= 1e-3


def test_log_mel_matches_torchaudio_kaldi_fbank(bunny_audio):
    kaldi = pytest.importorskip("torchaudio.compliance.kaldi")
    wave = bunny_audio - bunny_audio.mean()
    ref = kaldi.fbank(
        wave[None],
        htk_compat=True,
        sample_frequency=16000,
        use_energy=False,
        window_type="hanning",
        num_mel_bins=128,
        dither=0.0,
        frame_shift=10,
    )
    ours = log_mel(bunny_audio, normalize=False)
    assert ours.shape == ref.shape
    assert (ours - ref).abs().max().item() <= 1e-3


def test_log_mel_shapes_frames_and_options():
    wave = torch.randn(16000)
    assert log_mel(wave).shape == (1 + (16000 - 400) // 160, 128)  # snip_edges: 98 frames
    assert log_mel(wave[:399]).shape == (0, 128)
    assert log_mel(wave[:399], num_frames=7).shape == (7, 128)
    assert log_mel(wave, num_mel_bins=64).shape == (98, 64)
    batch = torch.stack([wave, 0.5 * wave.flip(0)])
    out = log_mel(batch, num_frames=50)
    assert out.shape == (2, 50, 128)
    assert torch.allclose(out[1], log_mel(0.5 * wave.flip(0), num_frames=50), atol=1e-6)
    raw = log_mel(wave, normalize=False)
    custom = log_mel(wave, mean=-3.0, std=2.0)
    assert torch.allclose(custom, (raw + 3.0) / 4.0, atol=1e-5)
    with pytest.raises(ValueError):
        log_mel(torch.randn(2, 2, 100))
    with pytest.raises(ValueError):
        log_mel(wave, num_frames=10, crop_position=1.5)


def test_log_mel_crop_position():
    wave = torch.randn(16000 * 2)
    full = log_mel(wave)  # 198 frames
    n = 50
    assert torch.equal(log_mel(wave, num_frames=n), full[:n])  # default: first window, like AST
    assert torch.allclose(log_mel(wave, num_frames=n, crop_position=1.0), full[-n:], atol=1e-6)
    start = round(0.5 * (full.shape[0] - n))
    assert torch.allclose(log_mel(wave, num_frames=n, crop_position=0.5), full[start : start + n], atol=1e-6)


def test_log_mel_is_independent_of_dc_offset_and_definitions():
    wave = torch.randn(8000, dtype=torch.float64)
    assert torch.allclose(log_mel(wave), log_mel(wave + 0.3), atol=1e-5)
    # Kaldi's "hanning" window is the symmetric Hann window.
    from ca2st.data.audio import _hanning

    n = torch.arange(400, dtype=torch.float64)
    assert torch.allclose(_hanning(400), 0.5 - 0.5 * torch.cos(2 * math.pi * n / 399))
    banks = mel_banks(128, 512, 16000)
    assert banks.shape == (128, 257)
    assert banks[:, -1].abs().max() == 0  # no weight on the Nyquist bin
    assert banks.max() <= 1.0 and banks.min() >= 0.0
    peaks = banks.argmax(1)[banks.sum(1) > 0]  # a few low filters fall between FFT bins (as in Kaldi)
    assert (peaks[1:] >= peaks[:-1]).all()
    assert banks[:, 0].sum() == 0 and banks[0, 1] > 0  # 0 Hz is below the 20 Hz edge; 31.25 Hz is above it


def test_log_mel_compiles_without_graph_breaks():
    wave = torch.randn(16000)
    fn = torch.compile(lambda x: log_mel(x, num_frames=120), backend="eager", fullgraph=True)
    assert torch.equal(fn(wave), log_mel(wave, num_frames=120))
    assert torch.equal(log_mel(wave.numpy(), 16000, 120), log_mel(wave, num_frames=120))  # numpy input


# ------------------------------------------------------------------------------------------ resampler


def _sine(freq, rate, seconds=1.0, amp=0.5):
    t = torch.arange(int(rate * seconds), dtype=torch.float64) / rate
    return (amp * torch.sin(2 * math.pi * freq * t)).float()


@pytest.mark.parametrize("orig", [48000, 44100, 22050, 8000])
def test_resample_keeps_in_band_sine(orig):
    y = resample(_sine(1000, orig), orig, 16000)
    assert y.shape[-1] == 16000
    expected = _sine(1000, 16000)
    assert (y - expected)[400:-400].abs().max() < 1e-4  # amplitude and phase kept (no delay)


def test_resample_attenuates_above_new_nyquist():
    y = resample(_sine(11000, 48000), 48000, 16000)
    rms = y[400:-400].pow(2).mean().sqrt().item()
    attenuation_db = 20 * math.log10(rms / (0.5 / math.sqrt(2)))
    assert attenuation_db < -80  # decimation would alias 11 kHz to 5 kHz at full amplitude
    naive = _sine(11000, 48000)[::3]
    assert naive.pow(2).mean().sqrt() > 0.3


def test_resample_shapes_and_identity():
    x = torch.randn(2, 3, 4801)
    y = resample(x, 48000, 16000)
    assert y.shape == (2, 3, 1601)
    assert torch.allclose(y[1, 2], resample(x[1, 2], 48000, 16000), atol=1e-6)
    assert resample(x, 16000, 16000) is x


# ------------------------------------------------------------------------------------------ SpecAugment


def _mask_runs(mask: torch.Tensor) -> list[int]:
    """Lengths of the runs of True in a 1-D boolean tensor."""
    runs, n = [], 0
    for v in mask.tolist() + [False]:
        if v:
            n += 1
        elif n:
            runs.append(n)
            n = 0
    return runs


def test_specaugment_masks_within_bounds():
    aug = SpecAugment().train()
    x = torch.randn(8, 400, 128) + 10.0  # never zero by chance
    for seed in range(5):
        out = aug(x, generator=torch.Generator().manual_seed(seed))
        for b in range(8):
            zero = out[b] == 0
            time_masked = zero.all(1)
            freq_masked = zero.all(0)
            assert torch.equal(zero, time_masked[:, None] | freq_masked[None, :])
            assert time_masked.sum() <= 2 * 69 and freq_masked.sum() <= 2 * 19
            assert all(r <= 2 * 69 for r in _mask_runs(time_masked)) and len(_mask_runs(time_masked)) <= 2
            assert all(r <= 2 * 19 for r in _mask_runs(freq_masked)) and len(_mask_runs(freq_masked)) <= 2
            kept = ~zero
            assert torch.equal(out[b][kept], x[b][kept])
    assert not torch.equal(out[0] == 0, out[1] == 0)  # each item gets its own masks


def test_specaugment_deterministic_and_identity():
    x = torch.randn(400, 128) + 10.0
    x0 = x.clone()
    aug = SpecAugment(time_masks=3, time_width=50, freq_masks=1, freq_width=30)
    a = aug(x, generator=torch.Generator().manual_seed(3))
    b = aug(x, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and not torch.equal(a, x)
    assert (a == 0).any()
    assert aug.eval()(x) is x
    assert SpecAugment(enabled=False).train()(x) is x
    assert SpecAugment(value=-1.0).train()(x, generator=torch.Generator().manual_seed(0)).eq(-1.0).any()
    assert torch.equal(x, x0)  # input untouched
