"""GIST descriptor (Oliva & Torralba), computed as the LabelMe toolbox function LMgist does.

For a grayscale image the descriptor is, per Gabor filter g_k (k = 1..K, K = Σ orientations)
and per block b of an n_blocks × n_blocks grid,

    gist[k, b] = mean_{(y, x) ∈ b} | IFFT2( FFT2(pad32(p)) · G_k ) |(y, x)

where p is the prefiltered image (log, whitening, local contrast normalisation), pad32 a
symmetric boundary extension by 32 pixels, and G_k the frequency response

    G_k(f) = exp(-10·0.35·(|f|/N/f0_i − 1)² − 2·p3_i·π·(∠f + θ_j)²),
    f0_i = 0.3 / 1.85^(i−1),  p3_i = 16·o_i² / 32²,  θ_j = π(j−1)/o_i,

on the N × N grid, N = image_size + 64. The output is filter-major, blocks column-major.

The fast path differs from a literal transcription only in how it evaluates the same sums:
- the filter bank and the prefilter operator are built once per setting and cached;
- the prefilter's Gaussian is separable and even, so its circular convolution is C·x·C with
  one real circulant matrix C (float64);
- the Gabor stage runs in complex64 and applies each filter only on the frequency box where
  it exceeds 1e-9 of its peak; its 2D inverse FFT is two 1D passes over that box that also
  skip the output rows the crop throws away (about 40 % of the full transforms' work);
- the block means are two small matrix products; chunks of images run in parallel threads.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import scipy.fft as sfft
from threadpoolctl import threadpool_limits

BOUNDARY_EXTENSION = 32
PREFILTER_PAD = 5
# Frequencies where a filter is below this fraction of its peak are skipped (outside its
# box); their contribution is far below float32 rounding of the result.
BOX_TOLERANCE = 1e-9
CHUNK = 4  # images per Gabor pass: keeps one filter's spectra in cache


def gist(
    images: np.ndarray | Sequence[np.ndarray],
    image_size: int = 128,
    orientations: Sequence[int] = (8, 8, 8, 8),
    n_blocks: int = 4,
    fc_prefilt: float = 4,
    workers: int | None = None,
) -> np.ndarray:
    """GIST descriptors of grayscale images, as LMgist computes them.

    Parameters
    ----------
    images : one image (H, W), a batch (N, H, W), or a sequence of 2D images of any sizes.
    image_size : side of the (even) square the images are resized and centre-cropped to.
    orientations : number of orientations at each scale (one entry per scale).
    n_blocks : the responses are averaged on an n_blocks × n_blocks grid.
    fc_prefilt : cut-off (cycles per image) of the whitening prefilter.
    workers : threads, each describing CHUNK images at a time (default: all cores).

    Returns
    -------
    float32 (sum(orientations) · n_blocks²,) for one image, (N, ...) for a batch.
    """
    plan = _gabor_plan(int(image_size), tuple(int(o) for o in orientations), int(n_blocks))
    single = isinstance(images, np.ndarray) and images.ndim == 2
    batch = _prepare(images, image_size)
    if batch.shape[0] == 0:
        return np.zeros((0, sum(orientations) * n_blocks**2), np.float32)

    def describe(chunk: np.ndarray) -> np.ndarray:
        return _gabor_features(prefilter(chunk, fc_prefilt), plan)

    chunks = [batch[i : i + CHUNK] for i in range(0, len(batch), CHUNK)]
    n_threads = min(len(chunks), workers or os.cpu_count() or 1)
    # Parallel over chunks (NumPy, BLAS and pocketfft release the GIL); BLAS itself stays
    # single-threaded, its own threads would only fight ours over the cores.
    with threadpool_limits(1, user_api="blas"):
        if n_threads > 1:
            with ThreadPoolExecutor(n_threads) as pool:
                parts = list(pool.map(describe, chunks))
        else:
            parts = [describe(chunk) for chunk in chunks]
    out = np.concatenate(parts)
    return out[0] if single else out


# --- input -------------------------------------------------------------------------------------


def _prepare(images: np.ndarray | Sequence[np.ndarray], size: int) -> np.ndarray:
    """Resize + centre-crop every image to size × size and rescale it to [0, 255] (float64)."""
    if isinstance(images, np.ndarray) and images.ndim in (2, 3):
        stack = images[None] if images.ndim == 2 else images
        groups = [np.asarray(stack, dtype=np.float64)]
    elif isinstance(images, np.ndarray):
        raise ValueError(f"gist expects (H, W) or (N, H, W) images, got shape {images.shape}")
    else:
        groups = [np.asarray(image, dtype=np.float64)[None] for image in images]
    out = []
    for group in groups:
        if group.ndim != 3:
            raise ValueError(f"gist expects 2D grayscale images, got shape {group.shape[1:]}")
        bad = np.flatnonzero(~np.isfinite(group).all(axis=(1, 2)))
        if bad.size:
            raise ValueError(f"image {len(out) + bad[0]} contains non-finite values")
        out.append(to_unit_range(resize_crop(group, size)))
    return np.concatenate(out) if out else np.zeros((0, size, size))


def to_unit_range(images: np.ndarray) -> np.ndarray:
    """x ← 255·(x − min x)/(max x − min x) per image; a constant image becomes all zeros."""
    low = images.min(axis=(1, 2), keepdims=True)
    span = images.max(axis=(1, 2), keepdims=True) - low
    return np.divide(255.0 * (images - low), span, out=np.zeros_like(images), where=span > 0)


def resize_crop(images: np.ndarray, size: int) -> np.ndarray:
    """LMgist's imresizecrop: bilinear resize so both sides ≥ size, then a centre crop.

    The scale is max(size/H, size/W), the new shape round(shape · scale); resampling follows
    MATLAB's imresize (bilinear, antialiased when shrinking, symmetric borders).
    """
    h, w = images.shape[1:]
    scale = max(size / h, size / w)
    new_h, new_w = (int(np.floor(d * scale + 0.5)) for d in (h, w))
    if (new_h, new_w) != (h, w):
        images = resize_matrix(h, new_h) @ images @ resize_matrix(w, new_w).T
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return images[:, top : top + size, left : left + size]


@lru_cache(maxsize=32)
def resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of MATLAB imresize's bilinear kernel along one axis.

    Output pixel i (1-based) sits at u = i/s + (1 − 1/s)/2 in input coordinates, s = n_out/n_in;
    its weights are the triangle kernel h(x) = max(0, 1 − |x|), widened to s·h(s·x) when
    shrinking, normalised to sum 1; out-of-range taps are mirrored back.
    """
    s = n_out / n_in
    kernel_scale = min(s, 1.0)
    width = 2.0 / kernel_scale
    u = np.arange(1, n_out + 1) / s + 0.5 * (1 - 1 / s)
    left = np.floor(u - width / 2)
    taps = left[:, None] + np.arange(int(np.ceil(width)) + 2)[None, :]
    weights = kernel_scale * np.maximum(0.0, 1 - np.abs(kernel_scale * (u[:, None] - taps)))
    weights /= weights.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(n_in), np.arange(n_in)[::-1]])
    columns = mirror[np.mod(taps.astype(int) - 1, 2 * n_in)]
    matrix = np.zeros((n_out, n_in))
    np.add.at(
        matrix, (np.repeat(np.arange(n_out), taps.shape[1]), columns.ravel()), weights.ravel()
    )
    return matrix


# --- prefilter ---------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _lowpass_matrix(n: int, fc: float) -> np.ndarray:
    """(n, n) circulant C with C x Cᵀ = Re(ifft2(fft2(x) · gf)) for any n × n image x.

    gf = fftshift(exp(−(fx² + fy²)/s1²)), s1 = fc/√ln 2, is separable, g(fy)·g(fx) with
    g(f) = exp(−f²/s1²) even, so the 2D filter is one real symmetric circulant per axis:
    C[i, j] = (1/n) Σ_f g(f) cos(2π f (i − j)/n).
    """
    s1 = fc / np.sqrt(np.log(2))
    f = np.fft.fftshift(np.arange(-n // 2, n // 2)).astype(np.float64)
    column = np.fft.ifft(np.exp(-(f**2) / s1**2)).real  # C[i, 0]
    matrix = column[(np.arange(n)[:, None] - np.arange(n)[None, :]) % n]
    matrix.setflags(write=False)
    return matrix


def prefilter(images: np.ndarray, fc: float = 4) -> np.ndarray:
    """LMgist's prefilt on a batch (N, S, S) of [0, 255] images, in float64.

    x = log(x + 1), padded symmetrically by 5 then to an even square n;
    out = x − x∗g;  out /= 0.2 + √|out²∗g|;  g the Gaussian of gf; padding cropped off.
    The circular convolution with g is applied as C x C (see `_lowpass_matrix`): two small
    matrix products per image instead of two FFTs of the awkward size n = S + 10. It stays
    in float64: in flat regions the whitened signal is a small difference of large terms.
    """
    x = np.log(images + 1.0)
    pad = PREFILTER_PAD
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad)), mode="symmetric")
    sn, sm = x.shape[1:]
    n = max(sn, sm)
    n += n % 2
    x = np.pad(x, ((0, 0), (0, n - sn), (0, n - sm)), mode="symmetric")
    lowpass = _lowpass_matrix(n, float(fc))

    def smooth(a: np.ndarray) -> np.ndarray:
        return lowpass @ a @ lowpass

    out = x - smooth(x)
    out /= 0.2 + np.sqrt(np.abs(smooth(out * out)))
    return out[:, pad : sn - pad, pad : sm - pad]


# --- Gabor bank --------------------------------------------------------------------------------


def gabor_bank(orientations: Sequence[int], n: int) -> np.ndarray:
    """LMgist's createGabor: (K, n, n) transfer functions G_k (zero frequency at [0, 0])."""
    f = np.arange(-n // 2, n // 2, dtype=np.float64)
    fx, fy = np.meshgrid(f, f)
    radius = np.fft.fftshift(np.sqrt(fx**2 + fy**2))
    angle = np.fft.fftshift(np.angle(fx + 1j * fy))
    filters = []
    for i, n_orient in enumerate(orientations):
        f0 = 0.3 / 1.85**i
        p3 = 16 * n_orient**2 / 32**2
        for j in range(n_orient):
            tr = angle + np.pi * j / n_orient
            tr = tr + 2 * np.pi * (tr < -np.pi) - 2 * np.pi * (tr > np.pi)
            filters.append(np.exp(-10 * 0.35 * (radius / n / f0 - 1) ** 2 - 2 * p3 * np.pi * tr**2))
    return np.stack(filters)


def block_edges(size: int, n_blocks: int) -> np.ndarray:
    """fix(linspace(0, size, n_blocks + 1)): the block boundaries of LMgist's downN."""
    return np.trunc(np.linspace(0, size, n_blocks + 1)).astype(int)


def block_mean_matrix(size: int, n_blocks: int) -> np.ndarray:
    """(n_blocks, size) matrix A with (A x)_b = mean of x over the rows of block b."""
    edges = block_edges(size, n_blocks)
    matrix = np.zeros((n_blocks, size))
    for b in range(n_blocks):
        matrix[b, edges[b] : edges[b + 1]] = 1.0 / (edges[b + 1] - edges[b])
    return matrix


@dataclass(frozen=True)
class _FilterPlan:
    lines: slice  # the filter's box in the fftshifted spectrum: rows (fy) if rows_first,
    along: slice  # else columns (fx); `along` indexes the float32 (re, im) pairs on a line
    rows_first: bool  # the box has fewer rows than columns
    response: np.ndarray  # float32 (lines, 2 · box length): the real filter, each value twice


def _pairs(index: slice) -> slice:
    """The float32 positions of complex entries `index` in an interleaved (re, im) view."""
    return slice(2 * index.start, 2 * index.stop)


@dataclass(frozen=True)
class _GaborPlan:
    size: int
    n: int
    filters: tuple[_FilterPlan, ...]
    block_means: np.ndarray  # float32 (n_blocks, size)
    checkerboard: np.ndarray  # float32 (n, n): (−1)^(y + x), fftshift in the image domain


@lru_cache(maxsize=8)
def _gabor_plan(size: int, orientations: tuple[int, ...], n_blocks: int) -> _GaborPlan:
    """Cache the bank as `_FilterPlan`s: each filter on the box where it is not negligible.

    The box bounds the frequencies where the filter exceeds BOX_TOLERANCE of its peak; with
    zero frequency moved to the centre (fftshift) it is one rectangle (a filter's support
    is one wedge of an annulus).
    """
    if size % 2 or size < max(n_blocks, 2) or n_blocks < 1 or min(orientations, default=0) < 1:
        raise ValueError(
            f"GIST needs an even image_size ≥ n_blocks ≥ 1 and ≥ 1 orientation per scale; got "
            f"image_size={size}, n_blocks={n_blocks}, orientations={orientations}"
        )
    n = size + 2 * BOUNDARY_EXTENSION
    plans = []
    for g in gabor_bank(orientations, n):
        shifted = np.fft.fftshift(g)
        live = shifted > BOX_TOLERANCE * g.max()
        rows, columns = np.flatnonzero(live.any(1)), np.flatnonzero(live.any(0))
        box = (slice(int(rows[0]), int(rows[-1]) + 1), slice(int(columns[0]), int(columns[-1]) + 1))
        rows_first = len(rows) < len(columns)
        response = shifted[box] if rows_first else shifted[box].T
        interleaved = np.repeat(response.astype(np.float32), 2, axis=1)  # (re, im) pairs
        if rows_first:
            plans.append(_FilterPlan(box[0], _pairs(box[1]), rows_first, interleaved))
        else:
            plans.append(_FilterPlan(box[1], _pairs(box[0]), rows_first, interleaved))
    index = np.arange(n)
    checkerboard = (1 - 2 * ((index[:, None] + index[None, :]) % 2)).astype(np.float32)
    return _GaborPlan(
        size, n, tuple(plans), block_mean_matrix(size, n_blocks).astype(np.float32), checkerboard
    )


def _gabor_features(prefiltered: np.ndarray, plan: _GaborPlan) -> np.ndarray:
    """Block means of |IFFT2(FFT2(pad32(p)) · G_k)| for a chunk of prefiltered images.

    Each 2D inverse FFT runs as two 1D passes over the filter's box only: first along the
    box's longer side (zero-padded to n, cropped to the image), then along the other
    (zero-padded, cropped). Moving a box in frequency — to the start of the zero-padded
    transform, or by the fftshift — multiplies the result by a unit phase e^{2πi d·x/n},
    which |.| removes.
    """
    ext, size, n = BOUNDARY_EXTENSION, plan.size, plan.n
    count, n_blocks = len(prefiltered), plan.block_means.shape[0]
    padded = np.pad(prefiltered, ((0, 0), (ext, ext), (ext, ext)), mode="symmetric")
    # fftshift(fft2(x)) = fft2((−1)^(y+x) x) for even n: zero frequency at the centre.
    spectrum = sfft.fft2(padded.astype(np.float32) * plan.checkerboard, workers=1)
    pairs = {  # float32 (image, line, 2n): interleaved (re, im) along each line
        True: spectrum.view(np.float32),
        False: np.ascontiguousarray(spectrum.transpose(0, 2, 1)).view(np.float32),
    }
    crop = slice(ext, ext + size)
    out = np.empty((count, len(plan.filters), n_blocks * n_blocks), np.float32)
    for k, f in enumerate(plan.filters):
        product = (pairs[f.rows_first][:, f.lines, f.along] * f.response).view(np.complex64)
        along = sfft.ifft(product, n=n, axis=2, workers=1)[:, :, crop]
        response = sfft.ifft(along, n=n, axis=1, workers=1)[:, crop]  # (image, line, along)
        blocks = plan.block_means @ (np.abs(response) @ plan.block_means.T)
        if f.rows_first:  # blocks[y block, x block]: column-major = transposed, row-major
            blocks = blocks.transpose(0, 2, 1)
        out[:, k] = blocks.reshape(count, -1)
    return out.reshape(count, -1)
