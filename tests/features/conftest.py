"""Fixtures shared by the network tests (C3D, VGG16); modules opt in with `usefixtures`."""

import pytest


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny networks on a shared 2-core machine: one thread avoids OpenMP oversubscription."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def empty_weights_dir(tmp_path, monkeypatch):
    """Point the default weights folder at an empty folder so no real file is picked up."""
    folder = tmp_path / "weights"
    folder.mkdir()
    monkeypatch.setenv("TUMORCHAR_WEIGHTS_DIR", str(folder))
    return folder
