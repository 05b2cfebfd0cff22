"""Named feature recipes: one definition of each feature the project computes.

A recipe holds the settings that shape the values (hashed into the feature store's key, a
weights file by the SHA-256 of its content), the feature-store folder name, the network's
weights label and ``compute(case_ids)`` over one patch store. `tumorchar features`,
`tumorchar reproduce` and `tumorchar train` all build their features from these, so the same
features get the same key whichever command made them.

Adding a feature = one builder here, registered in `RECIPES`::

    def my_recipe(store, *, size: int = 32) -> FeatureRecipe:
        settings = {"size": size, **window_setting(store)}
        return FeatureRecipe("mine", "mine", settings, lambda ids: my_features(
            slices_of(store, ids), size), batch_size=64)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tumorchar.provenance import file_sha256
from tumorchar.vocab import TASKS, Weights

#: GIST as the paper computes it (LMgist: 4 scales × 8 orientations, 4 × 4 blocks = 512-d).
GIST_DEFAULTS: dict[str, Any] = {
    "image_size": 128,
    "orientations": [8, 8, 8, 8],
    "n_blocks": 4,
    "fc_prefilt": 4.0,
}


@dataclass(frozen=True)
class FeatureRecipe:
    """A named feature computation over one patch store.

    ``compute(case_ids)`` returns an ``(n, d)`` array or ``{output: (n, d)}`` for the cases;
    ``network()`` (networks only) returns a fresh copy of the network with the recipe's
    weights, for fine-tuning.
    """

    name: str
    extractor: str
    settings: Mapping[str, Any]
    compute: Callable[[list[str]], Any]
    batch_size: int = 32
    weights: Weights | None = None
    network: Callable[[], Any] | None = field(default=None, compare=False)

    def key(self, patch_store) -> str:
        """The feature store's key for this recipe on ``patch_store``."""
        from tumorchar.features.store import feature_key

        return feature_key(self.extractor, self.settings, patch_store.content_hash)

    def stage_settings(self) -> dict[str, Any]:
        """What a stage that consumes this recipe hashes: name, folder, settings."""
        return {"recipe": self.name, "extractor": self.extractor, "settings": dict(self.settings)}

    def is_cached(self, features, patch_store) -> bool:
        return features.load(self.extractor, dict(self.settings), patch_store) is not None

    def run(self, features, patch_store, progress: bool = True) -> dict:
        """``{output: FeatureSet}`` from ``features`` (a `FeatureStore`), computed if needed."""
        return features.get_or_compute_outputs(
            self.extractor, dict(self.settings), patch_store, self.compute, self.batch_size,
            progress=progress,
        )  # fmt: skip


def slices_of(store, case_ids) -> np.ndarray | list[np.ndarray]:
    """Central slices of the cases (a list when their sizes differ, as MRI ROIs do)."""
    try:
        return store.slices(case_ids)
    except ValueError:
        return [store.load(case_id).slice2d for case_id in case_ids]


def volumes_of(store, case_ids) -> np.ndarray | list[np.ndarray]:
    """Volumes of the cases (a list when their shapes differ, as MRI ROI stacks do)."""
    try:
        return store.volumes(case_ids)
    except ValueError:
        return [store.load(case_id).volume for case_id in case_ids]


def window_of(store) -> tuple[dict[str, Any], dict[str, str]]:
    """(keyword arguments, setting) of the intensity window: CT stores keep the networks'
    HU window, MRI gets a per-image percentile window."""
    if getattr(store, "source", None) == "mri":
        return {"intensity_window": None}, {"intensity_window": "per-slice"}
    return {}, {"intensity_window": "ct-default"}


def _weights_fingerprint(path: Path | None) -> str | None:
    """A weights file enters the key by its content, never by its name."""
    return None if path is None else file_sha256(path)


# --- the recipes ---------------------------------------------------------------------------


def gist_recipe(
    store,
    *,
    image_size: int = GIST_DEFAULTS["image_size"],
    orientations=tuple(GIST_DEFAULTS["orientations"]),
    n_blocks: int = GIST_DEFAULTS["n_blocks"],
    fc_prefilt: float = GIST_DEFAULTS["fc_prefilt"],
    batch_size: int = 64,
) -> FeatureRecipe:
    """LMgist descriptors of the central 2D slices (512-d with the defaults)."""
    from tumorchar.features.gist import gist

    orients = tuple(int(o) for o in orientations)
    if not orients or min(orients) < 1 or image_size < n_blocks or n_blocks < 1:
        raise ValueError("need orientations ≥ 1 per scale and 1 ≤ n_blocks ≤ image_size")
    params = gist_parameters(image_size, orients, n_blocks, fc_prefilt)
    settings = {**params, "orientations": list(orients), "algorithm": "LMgist"}

    def compute(case_ids: list[str]):
        return gist(slices_of(store, case_ids), **params)

    return FeatureRecipe("gist", "gist", settings, compute, batch_size)


def gist_parameters(
    image_size: int = GIST_DEFAULTS["image_size"],
    orientations=tuple(GIST_DEFAULTS["orientations"]),
    n_blocks: int = GIST_DEFAULTS["n_blocks"],
    fc_prefilt: float = GIST_DEFAULTS["fc_prefilt"],
) -> dict[str, Any]:
    """Keyword arguments of `gist.gist` (the bundle's GIST extractor uses these too)."""
    return {
        "image_size": int(image_size),
        "orientations": tuple(int(o) for o in orientations),
        "n_blocks": int(n_blocks),
        "fc_prefilt": float(fc_prefilt),
    }


def vgg_recipe(
    store,
    *,
    weights: str | os.PathLike | None = None,
    allow_random_init: bool = False,
    seed: int = 0,
    bf16: bool | None = None,
    batch_size: int = 32,
    inference_batch: int = 16,
) -> FeatureRecipe:
    """VGG16 fc7 / fc8 (with and without ReLU) of the central slices.

    ``weights``: a torchvision-format state dict; None looks in the weights folder, and
    without a file the network is the seeded random initialization when
    ``allow_random_init`` (else FileNotFoundError). ``bf16``: bfloat16 autocast (None: on
    CUDA only); the resolved choice is part of the settings.
    """
    from tumorchar.features import vgg
    from tumorchar.features._netutils import pick_device, resolve_weights

    path = resolve_weights(weights, vgg.VGG16_FILE)
    model, label = vgg.load_vgg16(path, allow_random_init=allow_random_init, seed=seed)
    label = Weights(label)
    use_bf16 = pick_device(None).type == "cuda" if bf16 is None else bool(bf16)
    window_kw, window = window_of(store)
    settings = {
        "weights": label.value,
        "weights_sha256": _weights_fingerprint(path),
        "seed": int(seed) if label is Weights.RANDOM_INIT else None,
        "bf16": use_bf16,
        **window,
    }
    extractor = "vgg16" if label is not Weights.RANDOM_INIT else "vgg16-random-init"

    def compute(case_ids: list[str]):
        slices = slices_of(store, case_ids)
        return vgg.extract_vgg(model, slices, inference_batch, bf16=use_bf16, **window_kw)

    return FeatureRecipe("vgg", extractor, settings, compute, batch_size, label)


def c3d_recipe(
    store,
    *,
    preset: str = "cpu",
    weights: str | os.PathLike | None = None,
    allow_random_init: bool = False,
    seed: int = 0,
    batch_size: int = 16,
) -> FeatureRecipe:
    """fc6 of C3D (before any fine-tuning) on the 3D volumes.

    Sports-1M weights from ``weights`` (or the weights folder) fit only the ``paper`` preset;
    without usable weights the network is the seeded random initialization when
    ``allow_random_init`` (else the loading error is raised). ``network()`` gives a fresh
    copy with the same weights and a 7-task head, for fine-tuning.
    """
    from tumorchar.features import c3d
    from tumorchar.features._netutils import resolve_weights

    if preset not in c3d.PRESETS:
        raise ValueError(f"preset must be one of {', '.join(c3d.PRESETS)}, got {preset!r}")

    def network():
        model = c3d.C3D(preset, n_tasks=len(TASKS), seed=seed)
        if label is Weights.SPORTS1M:
            c3d.load_sports1m(model, path)
        model.weights_label = label.value
        return model

    path, label = None, Weights.RANDOM_INIT
    model = c3d.C3D(preset, n_tasks=len(TASKS), seed=seed)
    try:
        c3d.load_sports1m(model, weights)
        path, label = resolve_weights(weights, c3d.SPORTS1M_FILE), Weights.SPORTS1M
    except (FileNotFoundError, ValueError) as error:
        if weights is not None or not allow_random_init:
            raise error
        model = c3d.C3D(preset, n_tasks=len(TASKS), seed=seed)
    model.weights_label = label.value
    window_kw, window = window_of(store)
    settings = {
        "preset": preset,
        "weights": label.value,
        "weights_sha256": _weights_fingerprint(path),
        "seed": int(seed) if label is Weights.RANDOM_INIT else None,
        **window,
    }
    extractor = f"c3d-{preset}" + ("-random-init" if label is Weights.RANDOM_INIT else "")

    def compute(case_ids: list[str]):
        return c3d.extract_fc6(model, store.volumes(case_ids), **window_kw)

    return FeatureRecipe("c3d", extractor, settings, compute, batch_size, label, network)


def _loaded_weights(model) -> tuple[Weights, str | None]:
    """(label, content hash) of a network loaded by `load_i3d` / `load_efficientnet_lite0`:
    the converted file's sha256 enters the key, so new weights give new features."""
    label = Weights(model.weights_label)
    return label, (model.weights_sha256 or None)


def i3d_recipe(
    store,
    *,
    setting: str = "cpu",
    weights: str | os.PathLike | None = None,
    allow_random_init: bool = False,
    seed: int = 0,
    batch_size: int = 32,
    inference_batch: int = 8,
) -> FeatureRecipe:
    """I3D (Kinetics-400) on the 3D volumes, as clips of the ``setting``'s size
    (`i3d.SETTINGS`): ``mixed_5c`` (pooled, 1024-d: the "pre-trained" 3D feature),
    ``logits`` (400 Kinetics classes) and, when the setting fine-tunes only the top,
    ``endpoint``: the flattened output of the block before its first trained block, cached
    once for every fold's fine-tuning (`i3d.finetune`).

    ``weights``: a converted `.safetensors` file (None: the weights folder's); without one
    this raises FileNotFoundError naming `make weights` / `tumorchar weights fetch`, unless
    ``allow_random_init``. ``network()`` gives a fresh copy of the loaded network.
    """
    import copy

    from tumorchar.features import i3d

    cfg = i3d.get_setting(setting)
    model = i3d.load_i3d(weights, allow_random_init=allow_random_init, seed=seed)
    label, digest = _loaded_weights(model)
    window_kw, window = window_of(store)
    before = i3d.endpoint_before(cfg.start)
    settings = {
        "network": "i3d-rgb",
        "setting": cfg.name,
        "clip": [cfg.frames, cfg.size, cfg.size],
        "endpoint": before,
        "weights": label.value,
        "weights_sha256": digest,
        "seed": int(seed) if label is Weights.RANDOM_INIT else None,
        **window,
    }
    extractor = "i3d" + ("-random-init" if label is Weights.RANDOM_INIT else "")

    def compute(case_ids: list[str]):
        clips = i3d.volumes_to_clips(volumes_of(store, case_ids), cfg.frames, cfg.size,
                                     **window_kw)  # fmt: skip
        out = i3d.extract(model, clips, inference_batch, stop=before)
        if "endpoint" in out:
            out["endpoint"] = out["endpoint"].reshape(len(case_ids), -1)
        return out

    return FeatureRecipe(
        "i3d", extractor, settings, compute, batch_size, label, lambda: copy.deepcopy(model)
    )


def i3d_static_recipe(
    store,
    *,
    size: int = 64,
    weights: str | os.PathLike | None = None,
    allow_random_init: bool = False,
    seed: int = 0,
    batch_size: int = 64,
) -> FeatureRecipe:
    """I3D (Kinetics-400) on the central 2D slices as static clips (`i3d.extract_slices`:
    exact for an unbounded static clip, no frame count): ``mixed_5c`` (≈ VGG fc7_relu),
    ``logits`` (≈ fc8) and ``logits_relu`` (≈ fc8_relu)."""
    from tumorchar.features import i3d

    model = i3d.load_i3d(weights, allow_random_init=allow_random_init, seed=seed)
    label, digest = _loaded_weights(model)
    window_kw, window = window_of(store)
    settings = {
        "network": "i3d-rgb",
        "static": "one-frame-interior",
        "size": int(size),
        "weights": label.value,
        "weights_sha256": digest,
        "seed": int(seed) if label is Weights.RANDOM_INIT else None,
        **window,
    }
    extractor = "i3d-static" + ("-random-init" if label is Weights.RANDOM_INIT else "")

    def compute(case_ids: list[str]):
        out = i3d.extract_slices(model, slices_of(store, case_ids), size, **window_kw)
        out["logits_relu"] = np.maximum(out["logits"], 0.0)
        return out

    return FeatureRecipe("i3d-static", extractor, settings, compute, batch_size, label)


def efficientnet_recipe(
    store,
    *,
    weights: str | os.PathLike | None = None,
    allow_random_init: bool = False,
    seed: int = 0,
    bf16: bool | None = None,
    batch_size: int = 64,
    inference_batch: int = 32,
) -> FeatureRecipe:
    """EfficientNet-Lite0 (ImageNet) of the central slices: ``pooled_linear`` (≈ VGG fc7),
    ``pooled`` (≈ fc7_relu), ``logits`` (≈ fc8), ``logits_relu`` (≈ fc8_relu).
    ``bf16``: bfloat16 autocast (None: on CUDA only); the resolved choice is a setting."""
    from tumorchar.features import efficientnet as ef
    from tumorchar.features._netutils import pick_device

    model = ef.load_efficientnet_lite0(weights, allow_random_init=allow_random_init, seed=seed)
    label, digest = _loaded_weights(model)
    use_bf16 = pick_device(None).type == "cuda" if bf16 is None else bool(bf16)
    window_kw, window = window_of(store)
    settings = {
        "network": "efficientnet-lite0",
        "image_size": ef.IMAGE_SIZE,
        "weights": label.value,
        "weights_sha256": digest,
        "seed": int(seed) if label is Weights.RANDOM_INIT else None,
        "bf16": use_bf16,
        **window,
    }
    extractor = "efficientnet-lite0" + ("-random-init" if label is Weights.RANDOM_INIT else "")

    def compute(case_ids: list[str]):
        slices = slices_of(store, case_ids)
        return ef.extract_efficientnet(model, slices, inference_batch, bf16=use_bf16, **window_kw)

    return FeatureRecipe("efficientnet", extractor, settings, compute, batch_size, label)


#: Every named recipe: name → builder(store, **options).
RECIPES: dict[str, Callable[..., FeatureRecipe]] = {
    "gist": gist_recipe,
    "vgg": vgg_recipe,
    "c3d": c3d_recipe,
    "i3d": i3d_recipe,
    "i3d-static": i3d_static_recipe,
    "efficientnet": efficientnet_recipe,
}


def recipe(name: str, store, **options) -> FeatureRecipe:
    """Build the named recipe for ``store``."""
    if name not in RECIPES:
        raise ValueError(f"unknown feature recipe {name!r}; known: {', '.join(RECIPES)}")
    return RECIPES[name](store, **options)
