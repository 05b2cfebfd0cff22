"""A tiny in-memory object with the PatchStore interface the feature stage relies on."""

from __future__ import annotations

import hashlib

import numpy as np


class FakePatchStore:
    def __init__(self, n_cases=10, seed=0, shape=(8, 12, 12), source="phantom"):
        rng = np.random.default_rng(seed)
        self.case_ids = [f"case{i:03d}" for i in range(n_cases)]
        self._volumes = {c: rng.normal(size=shape).astype(np.float32) for c in self.case_ids}
        self.source, self.is_phantom = source, source == "phantom"
        self.loaded: list[str] = []  # every case id handed out, in order

    @property
    def content_hash(self) -> str:
        digest = hashlib.sha256()
        for case_id in self.case_ids:
            digest.update(case_id.encode() + self._volumes[case_id].tobytes())
        return digest.hexdigest()

    def volumes(self, case_ids=None):
        ids = self.case_ids if case_ids is None else list(case_ids)
        self.loaded.extend(ids)
        return np.stack([self._volumes[c] for c in ids])

    def slices(self, case_ids=None):
        volumes = self.volumes(case_ids)
        return volumes[:, volumes.shape[1] // 2]
