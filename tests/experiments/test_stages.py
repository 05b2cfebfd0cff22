"""The stage runner: keys from settings and inputs, caching, resuming, invalidation."""

import json

import numpy as np
import pytest

from tumorchar.errors import StageError
from tumorchar.experiments.stages import Reused, Stage, StageRunner
from tumorchar.provenance import file_sha256


def _graph(root, settings, calls):
    """patches → {gist, vgg} → {E2 (gist), E3 (vgg), E4 (gist + vgg)}; the VGG stage's
    weights file enters by content (as the feature recipes do)."""

    def stage(name, inputs=(), own=None):
        def compute(values, context):
            calls.append(name)
            value = [name, *(values[i] for i in inputs)]
            (context.folder / "value.json").write_text(json.dumps(value))
            return value

        def load(folder):
            return json.loads((folder / "value.json").read_text())

        return Stage(name, compute, own or {}, tuple(inputs), load=load)

    vgg_settings = {"bf16": settings["bf16"], "weights": file_sha256(settings["weights"])}
    runner = StageRunner(root)
    for s in (
        stage("patches", own={"size": settings["size"]}),
        stage("gist", ["patches"], {"blocks": settings["blocks"]}),
        stage("vgg", ["patches"], vgg_settings),
        stage("E2", ["gist"]),
        stage("E3", ["vgg"]),
        stage("E4", ["gist", "vgg"]),
    ):
        runner.run(s)
    return runner


DOWNSTREAM = {
    "size": {"patches", "gist", "vgg", "E2", "E3", "E4"},
    "blocks": {"gist", "E2", "E4"},
    "bf16": {"vgg", "E3", "E4"},
    "weights": {"vgg", "E3", "E4"},
}


@pytest.mark.parametrize("toggled", sorted(DOWNSTREAM))
def test_toggling_a_setting_recomputes_exactly_what_is_downstream(tmp_path, toggled):
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"one")
    settings = {"size": 1, "blocks": 4, "bf16": False, "weights": weights}
    first_calls: list[str] = []
    first = _graph(tmp_path / "out", settings, first_calls)
    assert first_calls == ["patches", "gist", "vgg", "E2", "E3", "E4"]

    again: list[str] = []
    _graph(tmp_path / "out", settings, again)
    assert again == []  # everything reused

    changed = dict(settings)
    if toggled == "weights":
        weights.write_bytes(b"two")  # same file name, new content
    else:
        changed[toggled] = {"size": 2, "blocks": 8, "bf16": True}[toggled]
    calls: list[str] = []
    runner = _graph(tmp_path / "out", changed, calls)
    assert set(calls) == DOWNSTREAM[toggled]
    differs = {name for name in runner.keys if runner.keys[name] != first.keys[name]}
    assert differs == DOWNSTREAM[toggled]
    cached = {r.name for r in runner.records if r.cached}
    assert cached == set(runner.keys) - DOWNSTREAM[toggled]


def test_weights_enter_by_content_not_by_path(tmp_path):
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"same")
    b.write_bytes(b"same")
    base = {"size": 1, "blocks": 4, "bf16": False}
    one = _graph(tmp_path / "o1", {**base, "weights": a}, [])
    two = _graph(tmp_path / "o2", {**base, "weights": b}, [])
    assert one.keys == two.keys


def test_a_stage_interrupted_before_its_key_was_written_is_recomputed(tmp_path):
    calls = []

    def compute(values, context):
        calls.append(1)
        np.save(context.folder / "x.npy", np.arange(3))
        return 3

    def load(folder):
        return int(np.load(folder / "x.npy").size)

    stage = Stage("s", compute, {"a": 1}, load=load)
    StageRunner(tmp_path).run(stage)
    (tmp_path / "s" / "stage.json").unlink()  # as if killed after writing x.npy
    assert StageRunner(tmp_path).run(stage) == 3
    assert StageRunner(tmp_path).run(stage) == 3
    assert len(calls) == 2


def test_fingerprints_and_self_caching_stages(tmp_path):
    content = {"hash": "a"}

    def store(values, context):
        return Reused(dict(content))

    runner = StageRunner(tmp_path)
    runner.run(Stage("store", store, fingerprint=lambda v: v["hash"]))
    runner.run(Stage("features", lambda values, context: 1, inputs=("store",)))
    assert all(r.cached for r in runner.records[:1])
    content["hash"] = "b"  # the same settings, new data: downstream keys follow the data
    other = StageRunner(tmp_path)
    other.run(Stage("store", store, fingerprint=lambda v: v["hash"]))
    other.run(Stage("features", lambda values, context: 1, inputs=("store",)))
    assert other.keys["store"] != runner.keys["store"]
    assert other.keys["features"] != runner.keys["features"]


def test_nested_stages_are_recorded_and_bad_declarations_refused(tmp_path):
    runner = StageRunner(tmp_path)

    def outer(values, context):
        return runner.run(Stage("inner", lambda v, c: 2))

    runner.run(Stage("outer", outer))
    assert [(r.name, r.nested) for r in runner.records] == [("outer", False), ("inner", True)]
    with pytest.raises(StageError, match="twice"):
        runner.run(Stage("outer", outer))
    with pytest.raises(StageError, match="missing"):
        runner.run(Stage("x", outer, inputs=("missing",)))
