"""A small stage runner: each stage declares its name, its inputs, its own settings, how to
compute its value and (optionally) how to load it back; the runner keys, times, caches and
resumes them.

    key(stage) = digest({name, settings, {input: key(input) for each input}})

so a stage is recomputed exactly when its own settings or anything upstream of it changed,
and a change never reaches upstream stages. A stage whose value has a content identity
(a patch store's ``content_hash``) gives ``fingerprint(value)``; it is folded into the
stage's key, so downstream stages follow the data, not only the settings that made it.

Caching. A stage with ``load`` gets a folder (``folder`` relative to the runner's root,
default: its name); ``compute(inputs, context)`` writes its outputs into ``context.folder``
and the runner then writes ``stage.json`` holding the key. While that key matches,
``load(folder)`` returns the value instead. Stages that cache by themselves (feature
stores, patch stores) have no ``load``; their compute runs every time and may return
`Reused(value)` to say it reused everything.

Declaring a new stage (e.g. a dataset or an experiment) is one `Stage(...)` and
``runner.run(stage)``; stages run inside another stage's compute (C3D fine-tuning inside
E1) are recorded as nested.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tumorchar._io import write_json_atomic
from tumorchar.errors import StageError
from tumorchar.provenance import digest

KEY_FILE = "stage.json"


@dataclass(frozen=True)
class Reused:
    """Returned by a self-caching stage's compute when it computed nothing new."""

    value: Any


@dataclass(frozen=True)
class StageContext:
    """What a stage's compute gets besides its inputs: its cache folder and its key."""

    folder: Path
    key: str


@dataclass(frozen=True)
class Stage:
    """One step: ``compute(inputs, context) -> value`` with ``inputs`` the values of the
    stages named in ``inputs`` (by name) and ``context`` a `StageContext`."""

    name: str
    compute: Callable[[Mapping[str, Any], StageContext], Any]
    settings: Mapping[str, Any] = field(default_factory=dict)
    inputs: tuple[str, ...] = ()
    load: Callable[[Path], Any] | None = None
    folder: str | None = None
    fingerprint: Callable[[Any], str] | None = None
    recorded: bool = True  # False: a cheap in-memory step, left out of the stage times


@dataclass(frozen=True)
class StageRecord:
    name: str
    key: str
    seconds: float
    cached: bool
    nested: bool


def _folder_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "stage"


class StageRunner:
    """Runs stages in the order they are given; keeps their values, keys and timings."""

    def __init__(self, root: str | Path, console=None):
        self.root = Path(root)
        self.console = console
        self.values: dict[str, Any] = {}
        self.keys: dict[str, str] = {}
        self.records: list[StageRecord] = []
        self._depth = 0

    def key(self, stage: Stage) -> str:
        """The stage's key before fingerprinting: its settings and its inputs' keys."""
        unknown = [name for name in stage.inputs if name not in self.keys]
        if unknown:
            raise StageError(f"stage {stage.name!r} needs {unknown}, which have not run")
        inputs = {name: self.keys[name] for name in stage.inputs}
        return digest({"stage": stage.name, "settings": dict(stage.settings), "inputs": inputs})

    def folder(self, stage: Stage) -> Path:
        return self.root / (stage.folder or _folder_name(stage.name))

    def run(self, stage: Stage) -> Any:
        """The stage's value: loaded while its key is unchanged, else computed."""
        if stage.name in self.keys:
            raise StageError(f"stage {stage.name!r} is declared twice")
        key = self.key(stage)
        folder = self.folder(stage)
        nested = self._depth > 0
        if not stage.recorded:
            value = stage.compute({n: self.values[n] for n in stage.inputs}, None)
            if stage.fingerprint is not None:
                key = digest([key, stage.fingerprint(value)])
            self.values[stage.name], self.keys[stage.name] = value, key
            return value
        self._announce(stage.name, nested)
        slot = len(self.records)  # a stage is listed before the stages it runs
        self.records.append(StageRecord(stage.name, key, 0.0, False, nested))
        start = time.perf_counter()
        self._depth += 1
        try:
            value, cached = self._value(stage, key, folder)
        finally:
            self._depth -= 1
        seconds = time.perf_counter() - start
        if stage.fingerprint is not None:
            key = digest([key, stage.fingerprint(value)])
        self.records[slot] = StageRecord(stage.name, key, seconds, cached, nested)
        self.values[stage.name], self.keys[stage.name] = value, key
        if self.console is not None:
            how = "reused from cache" if cached else "done"
            self.console.print(f"[green]{stage.name}: {how} in {seconds:.1f} s")
        return value

    def _value(self, stage: Stage, key: str, folder: Path) -> tuple[Any, bool]:
        if stage.load is not None and _stored_key(folder) == key:
            try:
                return stage.load(folder), True
            except (OSError, ValueError, KeyError):
                pass  # a damaged cache entry is recomputed
        inputs = {name: self.values[name] for name in stage.inputs}
        if stage.load is not None:
            (folder / KEY_FILE).unlink(missing_ok=True)  # never vouch for half-written output
            folder.mkdir(parents=True, exist_ok=True)
        value = stage.compute(inputs, StageContext(folder, key))
        if isinstance(value, Reused):
            return value.value, True
        if stage.load is not None:
            write_json_atomic(folder / KEY_FILE, {"stage": stage.name, "key": key})
        return value, False

    def _announce(self, name: str, nested: bool) -> None:
        if self.console is None:
            return
        if nested:
            self.console.print(f"[bold]{name}")
        else:
            self.console.rule(f"[bold]{name}")


def _stored_key(folder: Path) -> str | None:
    try:
        return json.loads((folder / KEY_FILE).read_text()).get("key")
    except (OSError, ValueError):
        return None
