"""Feature extractors as stored in a bundle: C3D fc6 (supervised) and GIST (unsupervised).

Each one turns a `RegionPatch` into a (1, d) feature row exactly as training turned the
patch store's arrays into features: C3D reads the 3D cube, GIST the central axial slice.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tumorchar.bundle.format import BundleContents, BundleError
from tumorchar.bundle.region import RegionPatch

NETWORK_FILE = "network.safetensors"


class C3DExtractor:
    """fc6 activations of the fine-tuned C3D network stored in the bundle."""

    def __init__(self, network: Any, settings: dict[str, Any]):
        self.network = network.eval()
        self.settings = dict(settings)

    def features(self, patch: RegionPatch) -> np.ndarray:
        return self.features_of_volumes(patch.volume[None])

    def features_of_volumes(self, volumes, progress: bool = False) -> np.ndarray:
        from tumorchar.features.c3d import extract_fc6

        window = self.settings.get("intensity_window")
        options = {"intensity_window": tuple(window) if window is not None else None}
        features = extract_fc6(self.network, volumes, device="cpu", progress=progress, **options)
        return np.asarray(features, dtype=np.float64)


class GistExtractor:
    """GIST descriptor (512 values) of the central axial slice."""

    def __init__(self, settings: dict[str, Any]):
        self.settings = dict(settings)
        if "orientations" in self.settings:
            self.settings["orientations"] = tuple(self.settings["orientations"])

    def features(self, patch: RegionPatch) -> np.ndarray:
        return self.features_of_slices(patch.slice2d[None])

    def features_of_slices(self, slices: np.ndarray) -> np.ndarray:
        from tumorchar.features.gist import gist

        return np.asarray(gist(slices, **self.settings), dtype=np.float64).reshape(len(slices), -1)


def save_network(network: Any, path) -> None:
    """Write the C3D network (weights, preset, task count) as a safetensors checkpoint."""
    from tumorchar.features.c3d import save_checkpoint

    save_checkpoint(network, path)


def extractor_from_manifest(spec: dict[str, Any], contents: BundleContents):
    """Build the extractor that `spec` (the manifest's pipeline.features entry) describes."""
    name = spec.get("extractor")
    if name == "gist":
        return GistExtractor(spec.get("settings", {}))
    if name == "c3d":
        return C3DExtractor(_load_c3d(contents), spec.get("settings", {}))
    raise BundleError(f"model bundle {contents.folder}: unknown feature extractor {name!r}")


def _load_c3d(contents: BundleContents):
    from tumorchar.features.c3d import load_checkpoint

    try:
        return load_checkpoint(contents.path(NETWORK_FILE))
    except Exception as error:  # noqa: BLE001 - safetensors, JSON metadata, torch: any malformation
        raise BundleError(
            f"model bundle {contents.folder}: {NETWORK_FILE}: the stored network cannot be "
            f"rebuilt by this tumorchar version ({type(error).__name__}: {str(error)[:200]})"
        ) from None
