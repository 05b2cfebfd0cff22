"""Where the model looked: a class-activation map of the malignancy head, on the scan's grid.

Two methods, one result type (`Heatmap`, a map on the region patch's grid with its axes):

- **Grad-CAM** (Selvaraju et al. 2017) for networks: with A^k the k-th feature map of a named
  layer and y the score, α_k = mean over positions of ∂y/∂A^k and
  L = ReLU(Σ_k α_k A^k). `grad_cam` works on any `nn.Module` and layer name (the C3D's last
  convolutional block ``network.conv5b`` here; an I3D's last block just as well). For a
  supervised bundle y is the malignancy score exactly as the bundle computes it,
  y = ((ReLU(fc6(x)) − μ) ⊘ σ) · w + b (`MalignancyHead`: the training standardization and
  the MTL malignancy predictor). C3D applies its ReLU after the convolution module, so
  `rectify=True` takes A^k = ReLU(conv(x)), the maps the next layer sees. The map has the
  layer's resolution, upsampled trilinearly. The default layer (`cam_layer`) is the last
  convolution whose output still has ≥ 4 positions along every axis: for the cpu preset's
  16×32×32 clip that is conv4b (4×4×4), as the last block, conv5b, has 2×2×2 positions
  mixed by the fully connected fc6. Measured on the two-blob synthetic case of the tests
  (label carried by the bright blob, 10 placements): the map is higher on the bright blob
  than on the decoy in 10 of 10 at conv4b and 5 of 10 at conv5b. For the paper preset
  (16×112×112) the rule also picks conv4b (4×14×14; conv5b has 2×7×7).
- **Occlusion sensitivity** (Zeiler & Fergus 2014) where no gradient map exists (GIST
  features, an SVM on them): S(v) = mean over the windows W ∋ v of y(x) − y(x with W set to
  the image's median), so regions whose removal lowers the score are positive. It works on
  2D or 3D arrays and any score function of a batch.

Clip → patch: the network's clip is a centre crop of the patch resized to the preset's
(frames, height, width) (`tumorchar.features.c3d.prepare_clips`); the map is put back in that
frame (zero where the crop cut the patch: the network never saw it) and resized to the patch.
Patch → scan: the patch was sampled on axes in the scan's `Volume.axes_mm()` coordinates, so
trilinear interpolation from those axes to the scan's (`resample_on_axes`) puts the map on
the scan's voxels; outside the region it is 0. Maps are scaled to a maximum of 1.

Written by `write_heatmap` as NIfTI / NRRD / MetaImage (by suffix) with the scan's geometry,
or, for ``.dcm``, as a DICOM Parametric Map on the source series (quantity: DCM 130403
Gradient-weighted class activation, or DCM Saliency for occlusion maps).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tumorchar._io import atomic_path
from tumorchar.bundle.outputs.algorithm import Algorithm

PM_SERIES_NUMBER = 9103
MIN_CAM_CELLS = 4
IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


@dataclass(frozen=True)
class Heatmap:
    """A map on a region patch's grid (`values`, z, y, x, max 1) and how it was made."""

    values: np.ndarray
    axes_mm: tuple[np.ndarray, np.ndarray, np.ndarray]
    method: str  # "grad-cam" | "occlusion"
    target: str  # what was explained, e.g. "malignancy score"
    layer: str | None = None

    def on_scan(self, scan: Any) -> np.ndarray:
        """The map on the voxels of `scan` (a `bundle.scan.Scan`), float32 (z, y, x), scaled
        again to a maximum of 1 (interpolation lowers peaks narrower than a voxel)."""
        from tumorchar.data.resample import resample_on_axes

        volume = scan.volume
        axes_in = tuple(np.asarray(a, float) for a in self.axes_mm)
        if any(a.size < 2 for a in axes_in):  # one sample along an axis: give it a thickness
            axes_in, values = _thicken(axes_in, self.values, volume.spacing)
        else:
            values = self.values
        # only the scan voxels the patch spans are interpolated; the rest of the scan stays 0
        box = []
        for coords_in, coords_out in zip(axes_in, volume.axes_mm(), strict=True):
            inside = np.flatnonzero((coords_out >= coords_in[0]) & (coords_out <= coords_in[-1]))
            if inside.size == 0:
                return np.zeros(volume.array.shape, np.float32)
            box.append(slice(int(inside[0]), int(inside[-1]) + 1))
        axes_out = tuple(c[b] for c, b in zip(volume.axes_mm(), box, strict=True))
        inside, _ = resample_on_axes(values, axes_in, axes_out, fill=0.0)
        mapped = np.zeros(volume.array.shape, np.float32)
        mapped[tuple(box)] = _unit_max(inside)
        return mapped


def grad_cam(
    model: nn.Module,
    inputs: torch.Tensor,
    layer: str,
    target: int | None = None,
    rectify: bool = False,
) -> torch.Tensor:
    """Grad-CAM maps (B, *spatial) of `model`'s score at the named `layer` (see module doc).

    `model(inputs)` returns one score per sample (B,) or scores (B, C), of which column
    `target` is explained. The weights of `model` get no gradient (only the layer's output is
    differentiated) and the model's train / eval mode is left as it is.
    """
    module = model.get_submodule(layer)
    captured: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _m, _i, output: captured.append(output))
    try:
        with torch.enable_grad():
            scores = model(inputs)
            if scores.ndim == 2:
                if target is None:
                    raise ValueError("the model returns several scores: give the target column")
                scores = scores[:, target]
            (activation,) = captured
            (gradient,) = torch.autograd.grad(scores.sum(), activation)
    finally:
        handle.remove()
    maps = F.relu(activation) if rectify else activation
    weights = gradient.mean(dim=tuple(range(2, gradient.ndim)), keepdim=True)
    return F.relu((weights * maps).sum(dim=1)).detach()


def cam_layer(
    model: nn.Module,
    inputs: torch.Tensor,
    min_cells: int = MIN_CAM_CELLS,
    candidates: Sequence[str] | None = None,
) -> str:
    """Name of the last convolution (in execution order) whose output has at least
    `min_cells` positions along every spatial axis, found by one forward pass; among the
    modules named `candidates` instead when given (e.g. an Inception network's blocks)."""
    shapes: list[tuple[str, tuple[int, ...]]] = []
    wanted = set(candidates) if candidates is not None else None
    handles = [
        module.register_forward_hook(
            lambda _m, _i, out, name=name: shapes.append((name, tuple(out.shape[2:])))
        )
        for name, module in model.named_modules()
        if (
            name in wanted
            if wanted is not None
            else isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d)
        )  # fmt: skip
    ]
    try:
        with torch.no_grad():
            model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    fitting = [name for name, shape in shapes if min(shape) >= min_cells]
    if not fitting:
        raise ValueError(f"no convolution of this model keeps {min_cells} positions per axis")
    return fitting[-1]


def occlusion_sensitivity(
    score: Callable[[np.ndarray], np.ndarray],
    image: np.ndarray,
    window: int | Sequence[int],
    stride: int | Sequence[int] | None = None,
    fill: float | None = None,
    batch_size: int = 64,
) -> np.ndarray:
    """S(v) = mean over windows W ∋ v of score(image) − score(image with W := fill).

    `score` maps a batch (N, *image.shape) to N scores; `window` / `stride` are per-axis
    sizes in pixels (stride defaults to half the window); `fill` defaults to the image's
    median, a neutral background. Every pixel is covered: the last window of each axis is
    aligned with the image's end.
    """
    image = np.asarray(image, dtype=np.float32)
    window = _per_axis(window, image.ndim)
    stride = (
        _per_axis(stride, image.ndim) if stride is not None else [max(1, w // 2) for w in window]
    )
    fill = float(np.median(image)) if fill is None else float(fill)
    starts = [_starts(n, w, s) for n, w, s in zip(image.shape, window, stride, strict=True)]
    boxes = [
        tuple(slice(a, a + w) for a, w in zip(corner, window, strict=True))
        for corner in np.stack(np.meshgrid(*starts, indexing="ij"), -1).reshape(-1, image.ndim)
    ]
    reference = float(np.ravel(score(image[None]))[0])
    drop = np.zeros(image.shape, np.float64)
    count = np.zeros(image.shape, np.float64)
    for first in range(0, len(boxes), batch_size):
        chunk = boxes[first : first + batch_size]
        batch = np.repeat(image[None], len(chunk), axis=0)
        for i, box in enumerate(chunk):
            batch[(i, *box)] = fill
        values = np.ravel(score(batch))
        for box, value in zip(chunk, values, strict=True):
            drop[box] += reference - float(value)
            count[box] += 1
    return (drop / np.maximum(count, 1)).astype(np.float32)


def _per_axis(value, ndim: int) -> list[int]:
    values = [int(value)] * ndim if np.isscalar(value) else [int(v) for v in value]
    if len(values) != ndim or min(values) < 1:
        raise ValueError(f"need {ndim} positive sizes, got {value}")
    return values


def _starts(n: int, window: int, stride: int) -> list[int]:
    window = min(window, n)
    starts = list(range(0, n - window + 1, stride))
    if starts[-1] != n - window:
        starts.append(n - window)
    return starts


# --------------------------------------------------------------------------- bundles


class MalignancyHead(nn.Module):
    """The differentiable malignancy score of a supervised (network + MTL) bundle:
    y = ((ReLU(network.trunk(x)) − μ) ⊘ σ) · w + b, with the C3D or `I3DFeatures` as the
    submodule ``network`` (so its layers are named ``network.<layer>``)."""

    def __init__(self, network: nn.Module, mean, scale, weights, intercept: float):
        super().__init__()
        self.network = network
        for name, value in (("mean", mean), ("scale", scale), ("weights", weights)):
            self.register_buffer(name, torch.as_tensor(np.asarray(value, np.float32)))
        self.intercept = float(intercept)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        features = torch.relu(self.network.trunk(clips))
        return ((features - self.mean) / self.scale) @ self.weights + self.intercept


def bundle_heatmap(
    model: Any, patch: Any, method: str = "auto", layer: str | None = None
) -> Heatmap:
    """The malignancy heatmap of a `Characterizer` on an extracted region `patch`.

    ``auto``: Grad-CAM for a network (I3D or C3D) bundle, occlusion for a GIST one;
    ``occlusion`` is also available for networks. The unsupervised score is the
    proportion-SVM margin (for the positive class), the supervised one the malignancy score
    before clipping.
    """
    from tumorchar.bundle.extractors import C3DExtractor, I3DExtractor

    if patch.axes_mm is None:
        raise ValueError("the region patch carries no sample axes; extract it from a scan")
    extractor = model._extractor
    if method not in ("auto", "grad-cam", "occlusion"):
        raise ValueError(f"unknown heatmap method {method!r}; use auto, grad-cam or occlusion")
    if isinstance(extractor, I3DExtractor):
        head = malignancy_head(model)
        window = extractor.intensity_window
        if method in ("auto", "grad-cam"):
            return i3d_grad_cam(head, patch, window, layer)
        return _network_occlusion(head, patch, lambda v: head.network.clips(v, window))
    if isinstance(extractor, C3DExtractor):
        head = malignancy_head(model)
        window = extractor.settings.get("intensity_window")
        if method in ("auto", "grad-cam"):
            return c3d_grad_cam(head, patch, window, layer)
        window = tuple(window) if window is not None else None
        return _network_occlusion(head, patch, lambda v: _c3d_clips(v, head.network.preset, window))
    if method == "grad-cam":
        raise ValueError("Grad-CAM needs a network; this model uses GIST features: use occlusion")
    return _gist_occlusion(model, patch)


def malignancy_head(model: Any):
    """The `MalignancyHead` module of a supervised bundle (`Characterizer` of kind mtl)."""
    if model.kind != "mtl":
        raise ValueError(f"a {model.kind} model has no malignancy regression head")
    est = model._estimators
    column = model.tasks.index("malignancy")
    mean, scale, weights, intercept = malignancy_affine(est["scaler"], est["mtl"], column)
    network = model._extractor.network
    head = MalignancyHead(network, mean, scale, weights, intercept)
    return head.eval()


def malignancy_affine(scaler: Any, mtl: Any, column: int):
    """(mean, scale, weights, intercept) with score = ((f − mean) / scale) · weights +
    intercept on all fc6 units: the shipped preprocessing (a StandardScaler, or a Pipeline
    of the dead-unit filter and one) and the MTL column, Ψ at its training mean. Dropped
    units get weight 0 (mean 0, scale 1)."""
    steps = [step for _, step in scaler.steps] if hasattr(scaler, "steps") else [scaler]
    standard = steps[-1]
    coef = np.asarray(mtl.coef_, float)
    w = coef[:, column] if coef.ndim == 2 else coef
    intercept = float(np.atleast_1d(mtl.intercept_)[column])
    psi_mean = getattr(mtl, "psi_mean_", None)
    if psi_mean is not None:
        intercept += float(np.atleast_1d(psi_mean)[column]) * float(w.sum())
    keep = steps[0].get_support() if len(steps) > 1 else np.ones(w.size, bool)
    mean, scale, weights = np.zeros(keep.size), np.ones(keep.size), np.zeros(keep.size)
    mean[keep], scale[keep], weights[keep] = standard.mean_, standard.scale_, w
    return mean, scale, weights, intercept


def c3d_grad_cam(head: Any, patch: Any, intensity_window=None, layer: str | None = None) -> Heatmap:
    """Grad-CAM of a C3D-based score module (`MalignancyHead`) on a patch, on the patch grid;
    `layer` defaults to `cam_layer`."""
    from tumorchar.features.c3d import prepare_clips

    preset = head.network.preset
    window = tuple(intensity_window) if intensity_window is not None else None
    clip = prepare_clips(patch.volume[None], preset, window).contiguous()
    layer = layer or cam_layer(head, clip)
    cam = grad_cam(head, clip, layer, rectify=True)[0]
    values = _clip_map_to_patch(cam, preset, patch.volume.shape)
    return Heatmap(_unit_max(values), patch.axes_mm, "grad-cam", "malignancy score", layer)


def _clip_map_to_patch(cam, preset, patch_shape) -> np.ndarray:
    """Layer-resolution map → clip (trilinear) → the resize frame (zeros outside the centre
    crop) → the patch's shape (trilinear; align_corners=False as the clip was made)."""
    (fd, fh, fw), (cd, ch, cw) = preset.resize, preset.crop
    od, oh, ow = (fd - cd) // 2, (fh - ch) // 2, (fw - cw) // 2
    on_clip = F.interpolate(cam[None, None].float(), size=preset.crop, mode="trilinear")
    frame = torch.zeros((1, 1, fd, fh, fw))
    frame[..., od : od + cd, oh : oh + ch, ow : ow + cw] = on_clip
    on_patch = F.interpolate(frame, size=tuple(patch_shape), mode="trilinear")
    return on_patch[0, 0].numpy()


def i3d_grad_cam(head: Any, patch: Any, intensity_window=None, layer: str | None = None):
    """Grad-CAM of an I3D-based score module (`MalignancyHead` on `I3DFeatures`) at the
    output of an Inception block: by default the last block whose map keeps
    `MIN_CAM_CELLS` positions per axis (Mixed_4f on the `cpu` setting's 16×64² clips, a
    4×4×4 map). The clip is the whole patch resized, so the map is resized back to it."""
    from tumorchar.features.i3d import ENDPOINTS

    clip = head.network.clips(patch.volume[None], intensity_window).contiguous()
    blocks = [f"network.model.blocks.{name}" for name in ENDPOINTS]
    layer = layer or cam_layer(head, clip, candidates=blocks)
    cam = grad_cam(head, clip, layer, rectify=True)[0]
    shape = tuple(patch.volume.shape)
    values = F.interpolate(cam[None, None].float(), size=shape, mode="trilinear")[0, 0].numpy()
    return Heatmap(_unit_max(values), patch.axes_mm, "grad-cam", "malignancy score", layer)


def _c3d_clips(volumes: np.ndarray, preset, window):
    from tumorchar.features.c3d import prepare_clips

    return prepare_clips(volumes, preset, window)


def _network_occlusion(head: Any, patch: Any, clips_of: Callable) -> Heatmap:
    """Occlusion sensitivity of the malignancy score; `clips_of` turns volumes into the
    network's clips."""

    def score(volumes: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return head(clips_of(volumes)).numpy()

    side = max(2, min(patch.volume.shape) // 6)
    values = occlusion_sensitivity(score, patch.volume, side, batch_size=32)
    return Heatmap(_unit_max(values), patch.axes_mm, "occlusion", "malignancy score")


def _gist_occlusion(model: Any, patch: Any) -> Heatmap:
    """Occlusion of the central axial slice (the only one GIST sees); the other slices of the
    patch get 0."""
    extractor = model._extractor
    classifier = model._estimators["classifier"]

    def score(slices: np.ndarray) -> np.ndarray:
        return np.ravel(classifier.decision_function(extractor.features_of_slices(slices)))

    side = max(2, min(patch.slice2d.shape) // 6)
    plane = occlusion_sensitivity(score, patch.slice2d, side)
    values = np.zeros(patch.volume.shape, np.float32)
    values[patch.volume.shape[0] // 2] = plane
    return Heatmap(_unit_max(values), patch.axes_mm, "occlusion", "proportion-SVM margin")


def _unit_max(values: np.ndarray) -> np.ndarray:
    """Negative evidence is dropped and the map scaled to a maximum of 1 (0 stays 0)."""
    values = np.clip(np.asarray(values, np.float32), 0.0, None)
    peak = float(values.max()) if values.size else 0.0
    return values / peak if peak > 0 else values


def _thicken(axes, values, spacing_zyx):
    """An axis with one sample (a one-slice region) becomes two samples ±half a voxel."""
    axes, values = list(axes), np.asarray(values)
    for axis, coords in enumerate(axes):
        if coords.size == 1:
            half = float(spacing_zyx[axis]) / 2.0
            axes[axis] = np.array([coords[0] - half, coords[0] + half])
            values = np.repeat(values, 2, axis=axis)
    return tuple(axes), values


# --------------------------------------------------------------------------- writing


def write_heatmap(
    path: str | os.PathLike,
    values_zyx: np.ndarray,
    scan: Any,
    heatmap: Heatmap,
    source: Sequence | None = None,
    algorithm: Algorithm | None = None,
) -> Path:
    """Write a map on the scan's grid: NIfTI / NRRD / MetaImage with the scan's geometry, or
    a DICOM Parametric Map (``.dcm``, needs the source stand-ins and the algorithm)."""
    path = Path(path)
    lower = path.name.lower()
    values_zyx = np.asarray(values_zyx, np.float32)
    if values_zyx.shape != scan.volume.array.shape:
        raise ValueError(
            f"heatmap shape {values_zyx.shape} does not match the scan {scan.volume.array.shape}"
        )
    if lower.endswith(".dcm"):
        if source is None or algorithm is None:
            raise ValueError("a DICOM Parametric Map needs the source DICOM series of the scan")
        return _write_parametric_map(path, values_zyx, heatmap, source, algorithm)
    if not lower.endswith(IMAGE_SUFFIXES):
        raise ValueError(f"{path.name}: write the heatmap as .nii(.gz), .nrrd, .mha or .dcm")
    import SimpleITK as sitk

    from tumorchar.data.io import Volume

    volume = scan.volume
    image = Volume(values_zyx, volume.spacing, volume.origin, volume.direction).to_sitk()
    suffix = next(s for s in IMAGE_SUFFIXES if lower.endswith(s))  # SimpleITK reads it
    with atomic_path(path, suffix) as tmp:
        sitk.WriteImage(image, str(tmp), True)
    return path


def _write_parametric_map(path: Path, values, heatmap: Heatmap, source, algorithm: Algorithm):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    if values.shape != (len(source), int(source[0].Rows), int(source[0].Columns)):
        raise ValueError("the heatmap does not lie on the source DICOM series' grid")
    quantity = (
        codes.DCM.GradientWeightedClassActivation
        if heatmap.method == "grad-cam"
        else codes.DCM.Saliency
    )
    explanation = f"{heatmap.method} of the {heatmap.target}"
    mapping = hd.pm.RealWorldValueMapping(
        lut_label="HEATMAP",
        lut_explanation=explanation[:64],
        unit=codes.UCUM.NoUnits,
        value_range=(0.0, 1.0),
        slope=1.0,
        intercept=0.0,
        quantity_definition=quantity,
    )
    pm = hd.pm.ParametricMap(
        source_images=list(source),
        pixel_array=values,
        series_instance_uid=hd.UID(),
        series_number=PM_SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=algorithm.name,
        manufacturer_model_name=algorithm.model_name[:64],
        software_versions=algorithm.version,
        device_serial_number=algorithm.bundle_sha256[:16],
        contains_recognizable_visual_features=False,
        real_world_value_mappings=[mapping],
        voi_lut_transformations=[hd.VOILUTTransformation(window_center=0.5, window_width=1.0)],
        content_label="HEATMAP",
        content_description=explanation[:64],
        series_description=algorithm.series_description("heatmap"),
    )
    pm.Laterality = ""  # type 2C in the General Series module; a lung nodule's side is unknown here
    with atomic_path(path) as tmp:
        pm.save_as(tmp, enforce_file_format=True)
    return path
