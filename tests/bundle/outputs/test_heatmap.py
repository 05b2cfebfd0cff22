"""Activation maps: they point at the evidence, and land on the scan where the region was."""

from __future__ import annotations

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import torch

from tumorchar.bundle.outputs.heatmap import (
    Heatmap,
    MalignancyHead,
    c3d_grad_cam,
    cam_layer,
    grad_cam,
    occlusion_sensitivity,
    write_heatmap,
)
from tumorchar.bundle.outputs.source import read_source_series
from tumorchar.bundle.region import RegionPatch
from tumorchar.bundle.scan import Scan, read_scan
from tumorchar.data.io import Volume

N = 24  # patch side (voxels of 1 mm)
RADIUS = 3.5


def ball(shape, center, radius=RADIUS) -> np.ndarray:
    grids = np.indices(shape, dtype=float)
    return np.sqrt(sum((g - c) ** 2 for g, c in zip(grids, center, strict=True))) <= radius


def two_blob_patch(rng, bright: bool, at_bright, at_decoy) -> np.ndarray:
    """Lung noise, a soft-tissue decoy blob, and a second blob that is dense (300 HU) in
    'malignant' cases and soft tissue otherwise: only its density carries the label."""
    volume = -850.0 + 25.0 * rng.standard_normal((N, N, N))
    volume[ball(volume.shape, at_decoy)] = -100.0 + 20.0 * rng.standard_normal()
    volume[ball(volume.shape, at_bright)] = (
        300.0 if bright else -100.0
    ) + 20 * rng.standard_normal()
    return volume.astype(np.float32)


def _placements(rng):
    # inside the part of the patch the cpu preset's centre crop keeps (columns ~4-20)
    while True:
        a, b = rng.uniform([5, 5, 7], [19, 19, 17], size=(2, 3))
        if np.linalg.norm(a - b) > 9:
            return a, b


@pytest.fixture(scope="module")
def trained_head():
    """A cpu-preset C3D fine-tuned on 96 two-blob cases, with a ridge malignancy head on its
    fc6 features (what a supervised bundle holds), ~20 s of CPU."""
    from sklearn.linear_model import Ridge
    from sklearn.preprocessing import StandardScaler

    from tumorchar.features.c3d import C3D, extract_fc6, finetune

    rng = np.random.default_rng(0)
    labels = np.arange(96) % 2
    volumes = np.stack([two_blob_patch(rng, bool(y), *_placements(rng)) for y in labels])
    scores = np.where(labels == 1, 5.0, 1.0)
    network = C3D("cpu", n_tasks=1, seed=0)
    finetune(network, volumes, scores[:, None], epochs=6, seed=0, pivots=np.array([3.0]))
    features = extract_fc6(network, volumes)
    scaler = StandardScaler().fit(features)
    ridge = Ridge(alpha=1.0).fit(scaler.transform(features), scores)
    head = MalignancyHead(network, scaler.mean_, scaler.scale_, ridge.coef_, ridge.intercept_)
    return head.eval()


def _patch(volume) -> RegionPatch:
    axes = tuple(np.arange(N, dtype=float) for _ in range(3))
    return RegionPatch(volume, volume[N // 2], (0.0, 0.0, 0.0), 0.0, axes_mm=axes)


@pytest.mark.slow  # fine-tunes a small C3D (~20 s of CPU, once per module)
@pytest.mark.parametrize(
    "at_bright, at_decoy",
    [((8, 8, 8.5), (16, 16, 15.5)), ((16, 16, 15.5), (8, 8, 8.5)), ((8, 16, 9), (16, 8, 15))],
)
def test_grad_cam_peaks_on_the_blob_that_carries_the_label(trained_head, at_bright, at_decoy):
    volume = two_blob_patch(np.random.default_rng(7), True, at_bright, at_decoy)
    heat = c3d_grad_cam(trained_head, _patch(volume))
    assert heat.method == "grad-cam" and heat.layer == "network.conv4b"
    values = heat.values
    assert values.shape == volume.shape and values.max() == pytest.approx(1.0)
    on_bright = values[ball(volume.shape, at_bright)].mean()
    on_decoy = values[ball(volume.shape, at_decoy)].mean()
    assert on_bright > 1.5 * on_decoy
    peak = np.array(np.unravel_index(np.argmax(values), values.shape))
    assert np.linalg.norm(peak - at_bright) < np.linalg.norm(peak - at_decoy)


@pytest.mark.slow
def test_cam_layer_is_the_last_convolution_with_enough_positions(trained_head):
    clip = torch.zeros((1, 3, 16, 32, 32))
    assert cam_layer(trained_head, clip) == "network.conv4b"
    assert cam_layer(trained_head, clip, min_cells=2) == "network.conv5b"


def test_grad_cam_of_a_linear_score_is_its_positive_part():
    """For y = Σ w ⊙ conv(x) with one channel, α = mean(w) and the map is ReLU(α·A)."""

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 1, 1, bias=False)
            torch.nn.init.ones_(self.conv.weight)

        def forward(self, x):
            return (self.conv(x) * 2.0).sum(dim=(1, 2, 3))

    x = torch.tensor([[[[1.0, -2.0], [3.0, 0.5]]]])
    cam = grad_cam(Net(), x, "conv")
    np.testing.assert_allclose(cam[0].numpy(), 2.0 * np.clip(x[0, 0].numpy(), 0, None))
    assert all(p.grad is None for p in Net().parameters())


def test_occlusion_finds_the_pixels_a_score_reads():
    image = np.zeros((20, 20), np.float32)
    image[12:15, 3:6] = 1.0
    score = lambda batch: batch[:, 12:15, 3:6].sum(axis=(1, 2))  # noqa: E731
    heat = occlusion_sensitivity(score, image, window=3, stride=1, fill=0.0)
    assert heat.shape == image.shape
    peak = np.unravel_index(np.argmax(heat), heat.shape)
    assert peak == (13, 4)
    assert heat[:8].max() == 0.0  # pixels that never share a window with the evidence


def _disc_image(rng, striped: bool, at_label, at_decoy) -> np.ndarray:
    """Lung noise, a smooth soft-tissue decoy disc and a second disc that is striped in
    'malignant' cases (a texture GIST's Gabor energies see; GIST normalizes brightness away)
    and smooth otherwise."""
    image = -850.0 + 25.0 * rng.standard_normal((32, 32))
    image[ball(image.shape, at_decoy, 5)] = -100.0
    disc = ball(image.shape, at_label, 5)
    rows = np.indices(image.shape)[0]
    stripes = -100.0 + 300.0 * np.sign(np.sin(rows * np.pi / 1.5))
    image[disc] = stripes[disc] if striped else -100.0
    return image.astype(np.float32)


@pytest.mark.slow
def test_occlusion_of_a_gist_classifier_peaks_on_the_disc_that_carries_the_label():
    """GIST + a linear classifier (what an unsupervised bundle scores with); ~10 s of CPU."""
    from sklearn.linear_model import LogisticRegression

    from tumorchar.features.gist import gist

    def features(stack):
        return np.asarray(gist(np.asarray(stack))).reshape(len(stack), -1)

    rng = np.random.default_rng(1)
    labels = np.arange(60) % 2
    images = []
    for y in labels:
        while True:
            a, b = rng.uniform(7, 25, size=(2, 2))
            if np.linalg.norm(a - b) > 12:
                break
        images.append(_disc_image(rng, bool(y), a, b))
    classifier = LogisticRegression(max_iter=3000).fit(features(images), labels)
    at_label, at_decoy = (9.0, 22.0), (22.0, 9.0)
    image = _disc_image(np.random.default_rng(5), True, at_label, at_decoy)
    heat = occlusion_sensitivity(lambda s: classifier.decision_function(features(s)), image, 6)
    on_label = heat[ball(image.shape, at_label, 5)].mean()
    assert on_label > 0 and on_label > 2 * heat[ball(image.shape, at_decoy, 5)].mean()
    peak = np.array(np.unravel_index(np.argmax(heat), heat.shape))
    assert np.linalg.norm(peak - at_label) < 6


def test_heatmap_lands_on_the_scan_where_the_patch_was():
    """A hot spot at a patch point maps to the scan voxel at the same world position."""
    spacing, origin = (2.0, 0.8, 0.8), (-30.0, -20.0, 50.0)
    scan = Scan(Volume(np.zeros((30, 80, 90), np.float32), spacing, origin), "ct", "geo")
    center = np.array([-30.0 + 47 * 0.8, -20.0 + 41 * 0.8, 50.0 + 14 * 2.0])  # voxel (47, 41, 14)
    offsets = (np.arange(N) - (N - 1) / 2.0) * 1.0
    axes = tuple(c + offsets for c in scan.axes_coordinates(center))
    values = np.zeros((N, N, N), np.float32)
    values[12, 12, 12] = 1.0  # +0.5 mm from the centre along each axis
    on_scan = Heatmap(values, axes, "grad-cam", "test").on_scan(scan)
    assert on_scan.shape == scan.shape_zyx
    k, j, i = np.unravel_index(np.argmax(on_scan), on_scan.shape)
    assert (k, j, i) in {(14, 41, 47), (14, 42, 48), (14, 41, 48), (14, 42, 47)}
    assert on_scan[:5].max() == 0.0 and on_scan.min() >= 0.0


def test_heatmap_files_keep_the_scan_geometry(dicom_series, algorithm, tmp_path):
    folder, uids, volume, mask, center = dicom_series
    scan = read_scan(folder)
    values = mask.astype(np.float32) * 0.5
    heat = Heatmap(values, scan.volume.axes_mm(), "grad-cam", "malignancy score", "conv4b")
    for name in ("heat.nii.gz", "heat.nrrd"):
        written = sitk.ReadImage(str(write_heatmap(tmp_path / name, values, scan, heat)))
        np.testing.assert_allclose(written.GetSpacing(), scan.volume.spacing[::-1])
        np.testing.assert_allclose(written.GetOrigin(), scan.volume.origin)
        np.testing.assert_allclose(sitk.GetArrayFromImage(written), values)
    source = read_source_series(folder)
    path = write_heatmap(tmp_path / "heat.dcm", values, scan, heat, source, algorithm)
    pm = hd.pm.ParametricMap.from_dataset(pydicom.dcmread(path))
    assert pm.FrameOfReferenceUID == uids["frame_of_reference"]
    assert pm.ReferencedSeriesSequence[0].SeriesInstanceUID == uids["series"]
    mapping = pm.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    assert mapping.QuantityDefinitionSequence[0].ConceptCodeSequence[0].CodeValue == "130403"
    frames = pm.pixel_array.reshape(-1, *values.shape[1:])
    assert frames.shape[0] == len(uids["instances"])
    for frame, item in zip(frames, pm.PerFrameFunctionalGroupsSequence, strict=True):
        z = float(item.PlanePositionSequence[0].ImagePositionPatient[2])
        k = int(round((z - 40.0) / 2.0))
        np.testing.assert_allclose(frame, values[k], atol=1e-6)
    with pytest.raises(ValueError, match="source DICOM series"):
        write_heatmap(tmp_path / "x.dcm", values, scan, heat)
