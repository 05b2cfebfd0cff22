"""A direct float64 NumPy transcription of LMgist (the slow reference for the fast GIST).

Line by line as the toolbox's MATLAB functions imresizecrop, prefilt, createGabor, gistGabor
and downN read; one image at a time, full complex 2D FFTs, no caching. Written independently
of `tumorchar.features.gist` so that the tests compare two implementations.
"""

from __future__ import annotations

import numpy as np


def matlab_round(x: float) -> int:
    return int(np.floor(x + 0.5))


def imresize_bilinear_axis(img: np.ndarray, n_out: int, axis: int) -> np.ndarray:
    """MATLAB imresize (bilinear, antialiasing on) along one axis, one output pixel at a time."""
    n_in = img.shape[axis]
    scale = n_out / n_in
    kscale = min(scale, 1.0)
    width = 2.0 / kscale
    moved = np.moveaxis(img, axis, 0)
    out = np.zeros((n_out,) + moved.shape[1:])
    for i in range(1, n_out + 1):
        u = i / scale + 0.5 * (1 - 1 / scale)
        left = int(np.floor(u - width / 2))
        total = 0.0
        acc = np.zeros(moved.shape[1:])
        for tap in range(left, left + int(np.ceil(width)) + 2):
            x = kscale * (u - tap)
            weight = kscale * ((1 + x) * (-1 <= x < 0) + (1 - x) * (0 <= x <= 1))
            if weight == 0:
                continue
            index = (tap - 1) % (2 * n_in)  # symmetric extension: 1..n, n..1
            index = index if index < n_in else 2 * n_in - 1 - index
            acc += weight * moved[index]
            total += weight
        out[i - 1] = acc / total
    return np.moveaxis(out, 0, axis)


def imresizecrop(img: np.ndarray, m: int) -> np.ndarray:
    scaling = max(m / img.shape[0], m / img.shape[1])
    newsize = [matlab_round(img.shape[0] * scaling), matlab_round(img.shape[1] * scaling)]
    if newsize[0] != img.shape[0]:
        img = imresize_bilinear_axis(img, newsize[0], 0)
    if newsize[1] != img.shape[1]:
        img = imresize_bilinear_axis(img, newsize[1], 1)
    sr = (newsize[0] - m) // 2
    sc = (newsize[1] - m) // 2
    return img[sr : sr + m, sc : sc + m]


def prefilt(img: np.ndarray, fc: float = 4) -> np.ndarray:
    w = 5
    s1 = fc / np.sqrt(np.log(2))
    img = np.log(img + 1)
    img = np.pad(img, w, mode="symmetric")
    sn, sm = img.shape
    n = max(sn, sm)
    n = n + n % 2
    img = np.pad(img, ((0, n - sn), (0, n - sm)), mode="symmetric")
    fx, fy = np.meshgrid(np.arange(-n / 2, n / 2), np.arange(-n / 2, n / 2))
    gf = np.fft.fftshift(np.exp(-(fx**2 + fy**2) / (s1**2)))
    output = img - np.real(np.fft.ifft2(np.fft.fft2(img) * gf))
    localstd = np.sqrt(np.abs(np.fft.ifft2(np.fft.fft2(output**2) * gf)))
    output = output / (0.2 + localstd)
    return output[w : sn - w, w : sm - w]


def create_gabor(orientations, n: int) -> np.ndarray:
    params = []
    for i, o in enumerate(orientations, start=1):
        for j in range(1, o + 1):
            params.append([0.35, 0.3 / (1.85 ** (i - 1)), 16 * o**2 / 32**2, np.pi / o * (j - 1)])
    fx, fy = np.meshgrid(np.arange(-n / 2, n / 2), np.arange(-n / 2, n / 2))
    fr = np.fft.fftshift(np.sqrt(fx**2 + fy**2))
    t = np.fft.fftshift(np.angle(fx + 1j * fy))
    g = np.zeros((n, n, len(params)))
    for i, p in enumerate(params):
        tr = t + p[3]
        tr = tr + 2 * np.pi * (tr < -np.pi) - 2 * np.pi * (tr > np.pi)
        g[:, :, i] = np.exp(-10 * p[0] * (fr / n / p[1] - 1) ** 2 - 2 * p[2] * np.pi * tr**2)
    return g


def down_n(x: np.ndarray, n_blocks: int) -> np.ndarray:
    nx = np.fix(np.linspace(0, x.shape[0], n_blocks + 1)).astype(int)
    ny = np.fix(np.linspace(0, x.shape[1], n_blocks + 1)).astype(int)
    y = np.zeros((n_blocks, n_blocks))
    for xx in range(n_blocks):
        for yy in range(n_blocks):
            y[xx, yy] = x[nx[xx] : nx[xx + 1], ny[yy] : ny[yy + 1]].mean()
    return y


def gist_gabor(img: np.ndarray, w: int, g: np.ndarray, boundary: int) -> np.ndarray:
    ny, nx, n_filters = g.shape
    img = np.pad(img, boundary, mode="symmetric")
    spectrum = np.fft.fft2(img)
    out = []
    for k in range(n_filters):
        ig = np.abs(np.fft.ifft2(spectrum * g[:, :, k]))
        ig = ig[boundary : ny - boundary, boundary : nx - boundary]
        out.append(down_n(ig, w).ravel(order="F"))
    return np.concatenate(out)


def lmgist(img, image_size=128, orientations=(8, 8, 8, 8), n_blocks=4, fc_prefilt=4, g=None):
    """The GIST of one grayscale image, float64 (pass `g` to reuse a filter bank)."""
    boundary = 32
    if g is None:
        g = create_gabor(orientations, image_size + 2 * boundary)
    img = imresizecrop(np.asarray(img, dtype=np.float64), image_size)
    img = img - img.min()
    if img.max() > 0:  # MATLAB would divide 0 by 0 here; a constant image stays zero
        img = 255 * img / img.max()
    output = prefilt(img, fc_prefilt)
    return gist_gabor(output, n_blocks, g, boundary)
