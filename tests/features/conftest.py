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


# The weights folder as the test session found it (before any test points the variable at an
# empty folder): `make test` fills it through `make weights` first.
_SESSION_WEIGHTS_DIR = None


def _session_weights_dir():
    global _SESSION_WEIGHTS_DIR
    if _SESSION_WEIGHTS_DIR is None:
        from tumorchar.features._netutils import weights_dir

        _SESSION_WEIGHTS_DIR = weights_dir()
    return _SESSION_WEIGHTS_DIR


_session_weights_dir()


@pytest.fixture(scope="session")
def real_weights():
    """{name: converted safetensors path} of the real pretrained weights; skips (naming the
    fix) when `make weights` has not been run."""
    from tumorchar.features import weights

    folder = _session_weights_dir()
    missing = [n for n in weights.SOURCES if not weights.is_current(n, folder)]
    if missing:
        pytest.skip(f"converted weights {missing} not in {folder}: run `make weights`")
    return {n: weights.converted_path(n, folder) for n in weights.SOURCES}
