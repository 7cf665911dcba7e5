"""Audio features as AST uses them, in plain torch: resampling, Kaldi-compatible log-mel, SpecAugment.

``log_mel`` reproduces ``torchaudio.compliance.kaldi.fbank(..., htk_compat=True, window_type='hanning',
dither=0.0, use_energy=False, frame_shift=10, num_mel_bins=128)`` as the AST recipe calls it (and as
``transformers.ASTFeatureExtractor`` computes it), followed by AST's pad/crop and AudioSet normalisation.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import nn

AUDIOSET_MEAN = -4.2677393
AUDIOSET_STD = 4.5689974
PREEMPHASIS = 0.97
# Kaldi floors the mel energies at the float32 machine epsilon before the log.
LOG_FLOOR = torch.finfo(torch.float32).eps

__all__ = ["AUDIOSET_MEAN", "AUDIOSET_STD", "SpecAugment", "log_mel", "mel_banks", "resample"]


# --------------------------------------------------------------------------------------------- resampling


@functools.lru_cache(maxsize=16)
def _resample_kernel(orig: int, new: int, zero_crossings: int, rolloff: float, beta: float) -> tuple[torch.Tensor, int]:
    """Polyphase Kaiser-windowed sinc taps ``(new, 1, K)`` for reduced rates ``orig -> new``, and the left padding.

    Output phase ``j`` sits at input position ``j * orig / new``; tap ``k`` reads input ``k - pad`` relative to the
    block start. The low-pass cutoff is ``rolloff`` times the lower of the two Nyquist frequencies.
    """
    cutoff = rolloff * min(orig, new) / orig  # twice the cutoff frequency, in cycles per input sample
    half = math.ceil(zero_crossings / cutoff)  # half-width in input samples
    k = torch.arange(-half, half + orig, dtype=torch.float64)
    t = k[None, :] - torch.arange(new, dtype=torch.float64)[:, None] * orig / new  # (new, K)
    window = torch.special.i0(beta * torch.sqrt((1 - (t / half).square()).clamp_min(0))) / torch.special.i0(
        torch.tensor(beta, dtype=torch.float64)
    )
    taps = cutoff * torch.sinc(cutoff * t) * window * (t.abs() <= half)
    return taps.to(torch.float32).unsqueeze(1), half


def resample(
    waveform: torch.Tensor,
    orig_freq: int,
    new_freq: int,
    *,
    zero_crossings: int = 32,
    rolloff: float = 0.96,
    beta: float = 9.0,
) -> torch.Tensor:
    """Band-limited resampling of ``(..., N)`` along the last axis (polyphase windowed sinc, Kaiser window).

    Output sample ``n`` is the signal at time ``n / new_freq``; the length is ``ceil(N * new_freq / orig_freq)``.
    The low-pass cutoff is ``rolloff`` times the lower Nyquist frequency: the pass band is flat (< 0.01 dB) up to
    0.875 of it and the stop band is below -90 dB from 1.06 of it, so downsampling does not alias.
    Outside the input the signal is taken as zero.
    """
    if orig_freq <= 0 or new_freq <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_freq} -> {new_freq}")
    if orig_freq == new_freq:
        return waveform
    g = math.gcd(int(orig_freq), int(new_freq))
    orig, new = int(orig_freq) // g, int(new_freq) // g
    taps, half = _resample_kernel(orig, new, zero_crossings, rolloff, beta)
    shape = waveform.shape
    x = waveform.reshape(-1, 1, shape[-1])
    n = shape[-1]
    out_len = math.ceil(n * new / orig)
    blocks = math.ceil(n / orig)
    x = torch.nn.functional.pad(x, (half, half + blocks * orig - n))
    y = torch.nn.functional.conv1d(x, taps.to(device=x.device, dtype=x.dtype), stride=orig)  # (B, new, blocks)
    return y.transpose(1, 2).reshape(x.shape[0], -1)[:, :out_len].reshape(*shape[:-1], out_len)


# --------------------------------------------------------------------------------------------- log-mel


def _mel(f: torch.Tensor) -> torch.Tensor:
    return 1127.0 * torch.log1p(f / 700.0)


@functools.lru_cache(maxsize=8)
def _mel_banks_cpu(num_bins: int, n_fft: int, sample_rate: float, low: float, high: float) -> torch.Tensor:
    nyquist = 0.5 * sample_rate
    if high <= 0:
        high += nyquist
    if not 0 <= low < high <= nyquist:
        raise ValueError(f"mel band [{low}, {high}] Hz does not fit a sample rate of {sample_rate}")
    lo, hi = _mel(torch.tensor(low, dtype=torch.float64)), _mel(torch.tensor(high, dtype=torch.float64))
    delta = (hi - lo) / (num_bins + 1)
    b = torch.arange(num_bins, dtype=torch.float64)[:, None]
    left, centre, right = lo + b * delta, lo + (b + 1) * delta, lo + (b + 2) * delta
    mel = _mel(torch.arange(n_fft // 2, dtype=torch.float64) * sample_rate / n_fft)[None, :]
    banks = torch.minimum((mel - left) / (centre - left), (right - mel) / (right - centre)).clamp_min(0)
    # Kaldi's banks stop below the Nyquist bin; its weight is zero.
    return torch.nn.functional.pad(banks, (0, 1))


def mel_banks(
    num_bins: int = 128, n_fft: int = 512, sample_rate: float = 16000.0, low_freq: float = 20.0, high_freq: float = 0.0
) -> torch.Tensor:
    """Kaldi/HTK triangular mel filters ``(num_bins, n_fft // 2 + 1)``, triangular on the mel scale
    ``1127 ln(1 + f / 700)``; ``high_freq <= 0`` counts down from the Nyquist frequency."""
    return _mel_banks_cpu(num_bins, n_fft, float(sample_rate), float(low_freq), float(high_freq)).clone()


@functools.lru_cache(maxsize=8)
def _hanning(length: int) -> torch.Tensor:
    # Kaldi's "hanning" is the symmetric Hann window: 0.5 - 0.5 cos(2 pi n / (N - 1)).
    return torch.hann_window(length, periodic=False, dtype=torch.float64)


def log_mel(
    waveform: torch.Tensor,
    sample_rate: int = 16000,
    num_frames: int | None = None,
    normalize: bool = True,
    mean: float = AUDIOSET_MEAN,
    std: float = AUDIOSET_STD,
    num_mel_bins: int = 128,
    crop_position: float = 0.0,
    *,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Kaldi-compatible log-mel filterbank of mono ``(N,)`` or ``(B, N)`` audio → ``(L, bins)`` / ``(B, L, bins)``.

    As AST: waveform mean removed, 25 ms frames every 10 ms (``snip_edges``: ``L = 1 + (N - win) // hop``),
    per-frame DC removal, pre-emphasis 0.97, symmetric Hann window, zero-padded FFT of the next power of two,
    power spectrum, HTK mel banks from 20 Hz to Nyquist, ``log(max(E, eps))``; no dither, no energy term.

    ``num_frames``: zero frames (before normalisation, as AST pads) are appended, or a window of that many frames
    is cut whose start is ``round(crop_position * (L - num_frames))``: 0 takes the first frames (AST and
    ``ASTFeatureExtractor``), 1 the last, 0.5 the centre. ``normalize`` maps ``x -> (x - mean) / (2 std)``
    (AudioSet statistics by default). The computation runs in ``dtype`` (float64 by default, which follows the
    numpy reference closely on near-silent frames); the result is float32.
    """
    waveform = torch.as_tensor(waveform)
    if waveform.dim() not in (1, 2):
        raise ValueError(f"waveform must be (N,) or (B, N) mono samples, got shape {tuple(waveform.shape)}")
    if not 0.0 <= crop_position <= 1.0:
        raise ValueError(f"crop_position must be in [0, 1], got {crop_position}")
    win = int(sample_rate * 0.025)
    hop = int(sample_rate * 0.010)
    n_fft = 1 << (win - 1).bit_length()
    x = waveform.to(dtype)
    total = 1 + (x.shape[-1] - win) // hop if x.shape[-1] >= win else 0
    start = 0
    if num_frames is not None and total > num_frames:
        # Only the kept frames are computed; the mean removal is cancelled by the per-frame DC removal anyway.
        start = int(round(crop_position * (total - num_frames)))
        x = x[..., start * hop : (start + num_frames - 1) * hop + win]
    if total:
        x = x - x.mean(-1, keepdim=True)
        frames = x.unfold(-1, win, hop)  # (..., L, win)
        frames = frames - frames.mean(-1, keepdim=True)
        previous = torch.cat((frames[..., :1], frames[..., :-1]), -1)
        compiling = torch.compiler.is_compiling()  # dynamo traces the builders directly; skip their caches
        hanning = _hanning.__wrapped__ if compiling else _hanning
        banks_fn = _mel_banks_cpu.__wrapped__ if compiling else _mel_banks_cpu
        frames = (frames - PREEMPHASIS * previous) * hanning(win).to(frames.device, dtype)
        spectrum = torch.fft.rfft(frames, n=n_fft)
        power = spectrum.real.square() + spectrum.imag.square()
        banks = banks_fn(num_mel_bins, n_fft, float(sample_rate), 20.0, 0.0).to(power.device, dtype)
        feats = torch.matmul(power, banks.T).clamp_min(LOG_FLOOR).log()
    else:
        feats = x.new_zeros(*x.shape[:-1], 0, num_mel_bins)
    if num_frames is not None and feats.shape[-2] < num_frames:
        feats = torch.nn.functional.pad(feats, (0, 0, 0, num_frames - feats.shape[-2]))
    if normalize:
        feats = (feats - mean) / (2 * std)
    return feats.to(torch.float32)


# --------------------------------------------------------------------------------------------- SpecAugment


class SpecAugment(nn.Module):
    """Time and frequency masking of log-mel features ``(L, F)`` or ``(B, L, F)``, masked values set to ``value``.

    Defaults follow the CAVA / CA²ST recipe: 2 time masks up to 70 frames and 2 frequency masks up to 20 bins.
    Each mask has width ``floor(u * max_width)`` and start ``floor(u' * (size - width))`` with ``u, u'`` uniform in
    [0, 1) (torchaudio's ``TimeMasking``/``FrequencyMasking`` rule); every item of a batch gets its own masks.
    Identity in eval mode or when ``enabled`` is false. Pass a ``torch.Generator`` for reproducible masks.
    """

    def __init__(
        self,
        time_masks: int = 2,
        time_width: int = 70,
        freq_masks: int = 2,
        freq_width: int = 20,
        value: float = 0.0,
        enabled: bool = True,
    ):
        super().__init__()
        self.time_masks, self.time_width = time_masks, time_width
        self.freq_masks, self.freq_width = freq_masks, freq_width
        self.value, self.enabled = value, enabled

    def extra_repr(self) -> str:
        return (
            f"time_masks={self.time_masks}, time_width={self.time_width}, freq_masks={self.freq_masks}, "
            f"freq_width={self.freq_width}, enabled={self.enabled}"
        )

    @staticmethod
    def _masks(batch: int, count: int, max_width: int, size: int, generator) -> torch.Tensor:
        """Boolean ``(batch, size)``: union of ``count`` random intervals per item."""
        if count == 0 or max_width == 0 or size == 0:
            return torch.zeros(batch, size, dtype=torch.bool)
        u = torch.rand(2, batch, count, 1, generator=generator, dtype=torch.float64)
        width = (u[0] * min(max_width, size)).floor()
        start = (u[1] * (size - width)).floor()
        pos = torch.arange(size, dtype=torch.float64)
        return ((pos >= start) & (pos < start + width)).any(1)

    def forward(self, spec: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if not (self.training and self.enabled):
            return spec
        if spec.dim() not in (2, 3):
            raise ValueError(f"SpecAugment expects (L, F) or (B, L, F), got shape {tuple(spec.shape)}")
        x = spec if spec.dim() == 3 else spec.unsqueeze(0)
        B, L, F = x.shape
        time = self._masks(B, self.time_masks, self.time_width, L, generator).to(x.device)
        freq = self._masks(B, self.freq_masks, self.freq_width, F, generator).to(x.device)
        mask = time[:, :, None] | freq[:, None, :]
        out = x.masked_fill(mask, self.value)
        return out if spec.dim() == 3 else out[0]
