"""Shared helpers of the network extractors: intensity windows and weight files."""

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from tumorchar.features import _netutils as nu


def test_ct_window_maps_hu_linearly_and_clips():
    hu = np.array([-2000.0, -1000.0, -300.0, 400.0, 3000.0])
    np.testing.assert_allclose(nu.to_unit_range(hu, nu.CT_WINDOW_HU), [0, 0, 0.5, 1, 1])


def test_percentile_window_for_arbitrary_units_and_constant_images():
    mri = np.linspace(0.0, 5000.0, 1001)
    u = nu.to_unit_range(mri, None)
    assert u.min() == 0.0 and u.max() == 1.0
    np.testing.assert_allclose(u[500], 0.5, atol=1e-6)
    np.testing.assert_array_equal(nu.to_unit_range(np.full((4, 4), 7.0), None), 0.0)


def test_non_finite_input_and_bad_window_are_refused():
    with pytest.raises(ValueError, match="NaN"):
        nu.to_unit_range(np.array([0.0, np.nan]), nu.CT_WINDOW_HU)
    with pytest.raises(ValueError, match="lo < hi"):
        nu.to_unit_range(np.zeros(3), (5.0, 5.0))


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_state_dict_files_read_back_equal(tmp_path, suffix):
    state = {"a.weight": torch.randn(3, 2), "a.bias": torch.randn(3)}
    path = tmp_path / f"w{suffix}"
    if suffix == ".pth":
        torch.save({f"module.{k}": v for k, v in state.items()}, path)  # DataParallel prefix
    else:
        save_file(state, str(path))
    back = nu.read_state_dict(path)
    assert set(back) == set(state)
    for k, v in state.items():
        assert torch.equal(back[k], v)


def test_weights_folder_follows_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(nu.WEIGHTS_ENV, str(tmp_path))
    assert nu.weights_dir() == tmp_path
    assert nu.resolve_weights(None, "x.pth") is None
    (tmp_path / "x.pth").write_bytes(b"")
    assert nu.resolve_weights(None, "x.pth") == tmp_path / "x.pth"
