"""Feature extractors as stored in a bundle: I3D Mixed_5c or C3D fc6 (supervised) and GIST.

Each one turns a `RegionPatch` into a (1, d) feature row exactly as training turned the
patch store's arrays into features: I3D and C3D read the 3D cube, GIST the central axial
slice.

An I3D bundle stores only what fine-tuning changed (the trained blocks and the task head,
`I3D_TRAINED`); the frozen blocks below come from the Kinetics-400 weights in the weights
folder (`tumorchar weights fetch`), checked at load against the digest of the tensors the
model was trained with, so a bundle never silently runs on other weights. A network trained
from a seeded random initialization (`--allow-random-init`) is rebuilt from its seed and
checked the same way.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import nn

from tumorchar.bundle.format import BundleContents, BundleError
from tumorchar.bundle.region import RegionPatch

NETWORK_FILE = "network.safetensors"
I3D_CHECKPOINT_FORMAT = "tumorchar-i3d-finetuned-v1"


class I3DFeatures(nn.Module):
    """A fine-tuned I3D as a feature network: clips (B, 3, T, S, S) → pooled Mixed_5c
    (B, 1024) by `trunk` (what `MalignancyHead` differentiates for Grad-CAM). A CT cube
    becomes one clip as a whole (`clips`), so a clip position maps straight to the patch."""

    n_features = 1024

    def __init__(self, model: Any, setting: str, seed: int = 0):
        from tumorchar.features.i3d import get_setting

        super().__init__()
        self.model, self.setting, self.seed = model.eval(), get_setting(setting), int(seed)

    def trunk(self, clips):
        return self.model(clips)["mixed_5c"]

    def clips(self, volumes, intensity_window):
        from tumorchar.features.i3d import volumes_to_clips

        s = self.setting
        return volumes_to_clips(volumes, s.frames, s.size, intensity_window)


class I3DExtractor:
    """Pooled Mixed_5c features of the fine-tuned I3D stored in the bundle."""

    def __init__(self, network: I3DFeatures, settings: dict[str, Any]):
        self.network = network
        self.settings = dict(settings)

    @property
    def intensity_window(self):
        window = self.settings.get("intensity_window")
        return tuple(window) if window is not None else None

    def features(self, patch: RegionPatch) -> np.ndarray:
        return self.features_of_volumes(patch.volume[None])

    def features_of_volumes(self, volumes, progress: bool = False, chunk: int = 64):
        from tumorchar.features.i3d import extract

        parts = [np.zeros((0, I3DFeatures.n_features))]
        for first in range(0, len(volumes), chunk):
            clips = self.network.clips(volumes[first : first + chunk], self.intensity_window)
            parts.append(extract(self.network.model, clips, device="cpu")["mixed_5c"])
        return np.concatenate(parts).astype(np.float64)


def _i3d_parts(model: Any, setting: str) -> tuple[dict, dict]:
    """(trained, frozen) tensors of `model` fine-tuned under `setting`: the blocks from the
    setting's first trained block on and the task head, and the blocks before (the Kinetics
    classifier, unused by features, belongs to neither)."""
    from tumorchar.features.i3d import ENDPOINTS, get_setting

    trained_blocks = ENDPOINTS[ENDPOINTS.index(get_setting(setting).start) :]
    trained, frozen = {}, {}
    for name, tensor in model.state_dict().items():
        if name.startswith("task_head."):
            trained[name] = tensor
        elif name.startswith("blocks."):
            block = name.split(".")[1]
            (trained if block in trained_blocks else frozen)[name] = tensor
    return trained, frozen


def save_i3d_network(network: I3DFeatures, path) -> None:
    """Write the trained part of a fine-tuned I3D and what rebuilds the rest (safetensors)."""
    from tumorchar.features._netutils import save_safetensors_atomic
    from tumorchar.provenance import state_dict_sha256

    model = network.model
    trained, frozen = _i3d_parts(model, network.setting.name)
    metadata = {
        "format": I3D_CHECKPOINT_FORMAT,
        "setting": network.setting.name,
        "n_tasks": str(model.task_head.out_features),
        "initial_weights": model.weights_label.split("+")[0],
        "weights_file_sha256": model.weights_sha256,
        "frozen_sha256": state_dict_sha256(frozen),
        "seed": str(network.seed),
    }
    save_safetensors_atomic(trained, path, metadata)


def load_i3d_network(path, folder) -> I3DFeatures:
    """Rebuild the network `save_i3d_network` wrote: the frozen blocks from the weights
    folder (or the recorded seed), checked by digest, then the stored trained tensors."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from tumorchar.features.i3d import load_i3d
    from tumorchar.provenance import state_dict_sha256

    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata() or {}
    if meta.get("format") != I3D_CHECKPOINT_FORMAT:
        raise ValueError(f"not a {I3D_CHECKPOINT_FORMAT} checkpoint")
    random_init = meta.get("initial_weights") == "random-init"
    try:
        model = load_i3d(allow_random_init=random_init, seed=int(meta.get("seed", 0)))
    except FileNotFoundError as error:
        raise BundleError(f"model bundle {folder} needs the I3D weights: {error}") from None
    if not random_init and model.weights_sha256 != meta.get("weights_file_sha256"):
        raise BundleError(
            f"model bundle {folder} was trained from I3D weights with sha256 "
            f"{meta.get('weights_file_sha256')}, the weights folder holds "
            f"{model.weights_sha256}; run `tumorchar weights fetch` or retrain"
        )
    model.add_task_head(int(meta["n_tasks"]))
    trained, frozen = _i3d_parts(model, meta["setting"])
    if state_dict_sha256(frozen) != meta.get("frozen_sha256"):
        raise BundleError(
            f"model bundle {folder}: the frozen I3D blocks rebuilt here differ from those "
            "the model was trained with (digest mismatch); refusing to predict with them"
        )
    stored = load_file(str(path))
    if set(stored) != set(trained):
        raise ValueError(f"it holds other tensors than the {meta['setting']!r} setting trains")
    model.load_state_dict(stored, strict=False)
    model.weights_label += "+finetuned"
    return I3DFeatures(model, meta["setting"], int(meta.get("seed", 0)))


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
    """Write the bundle's network as safetensors: an `I3DFeatures` by `save_i3d_network`, a
    C3D whole (weights, preset, task count)."""
    from tumorchar.features.c3d import save_checkpoint

    if isinstance(network, I3DFeatures):
        save_i3d_network(network, path)
    else:
        save_checkpoint(network, path)


def extractor_from_manifest(spec: dict[str, Any], contents: BundleContents):
    """Build the extractor that `spec` (the manifest's pipeline.features entry) describes."""
    name = spec.get("extractor")
    if name == "gist":
        return GistExtractor(spec.get("settings", {}))
    if name == "c3d":
        return C3DExtractor(_load_c3d(contents), spec.get("settings", {}))
    if name == "i3d":
        try:
            network = load_i3d_network(contents.path(NETWORK_FILE), contents.folder)
        except BundleError:
            raise
        except Exception as error:  # noqa: BLE001 - safetensors, metadata, torch: any malformation
            raise _unreadable_network(contents, error) from None
        return I3DExtractor(network, spec.get("settings", {}))
    raise BundleError(f"model bundle {contents.folder}: unknown feature extractor {name!r}")


def _load_c3d(contents: BundleContents):
    from tumorchar.features.c3d import load_checkpoint

    try:
        return load_checkpoint(contents.path(NETWORK_FILE))
    except Exception as error:  # noqa: BLE001 - safetensors, JSON metadata, torch: any malformation
        raise _unreadable_network(contents, error) from None


def _unreadable_network(contents: BundleContents, error: Exception) -> BundleError:
    return BundleError(
        f"model bundle {contents.folder}: {NETWORK_FILE}: the stored network cannot be "
        f"rebuilt by this tumorchar version ({type(error).__name__}: {str(error)[:200]})"
    )
