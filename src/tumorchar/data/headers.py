"""What an image file declares, checked before any voxel is decoded.

SimpleITK decodes NIfTI, NRRD and MetaImage pixels, but it trusts their headers: a file cut
short is zero-filled, a NIfTI without voxel sizes is read at 1 mm, NaN voxels in a NIfTI
become 0, and a 200-byte file may declare gigabytes. So, before SimpleITK sees a file,
this module reads its header itself and checks, naming the case and the file:

- the axis sizes, element type and number of components (multi-component images — RGB,
  vectors, complex numbers, time series — are refused);
- the voxel sizes: every spatial axis needs a finite, positive spacing;
- the memory budget: the decoded float32 array, 4 · Π sizes bytes, must fit in
  `max_bytes` (default `DEFAULT_MAX_BYTES`, or `$TUMORCHAR_MAX_SCAN_BYTES`);
- the data length: the file (after decompression, read as a stream in `CHUNK` pieces so
  that memory stays bounded) holds at least the bytes that the sizes and element type
  declare — a shorter file is truncated;
- for NIfTI float data, the number of non-finite voxels, counted in the same pass (the
  NIfTI library would silently turn them into 0).

The checks read the header fields that decide these points and nothing more; geometry
(orientation, origin) is still read by SimpleITK.
"""

from __future__ import annotations

import bz2
import gzip
import math
import os
import re
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# 2 GiB of float32 voxels: 536 870 912 voxels, e.g. 512 × 512 × 2048. Reading peaks at
# about twice this (SimpleITK's buffer and the NumPy array exist together for a moment).
DEFAULT_MAX_BYTES = 2 * 1024**3
MAX_BYTES_ENV = "TUMORCHAR_MAX_SCAN_BYTES"
CHUNK = 1 << 22  # bytes read at a time while measuring a file's data
HEADER_LIMIT = 1 << 20  # text headers (NRRD, MetaImage) longer than this are refused


def _error(message: str):
    from tumorchar.data.io import ScanReadError

    return ScanReadError(message)


def max_scan_bytes(max_bytes: int | None = None) -> int:
    """The memory budget in bytes: the argument, else `$TUMORCHAR_MAX_SCAN_BYTES`, else 2 GiB."""
    if max_bytes is not None:
        return int(max_bytes)
    text = os.environ.get(MAX_BYTES_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_BYTES
    try:
        value = int(float(text))
    except ValueError:
        raise _error(f"${MAX_BYTES_ENV} must be a number of bytes, got {text!r}") from None
    if value <= 0:
        raise _error(f"${MAX_BYTES_ENV} must be positive, got {text!r}")
    return value


def check_budget(n_voxels: int, name: str, what: str, max_bytes: int | None = None) -> None:
    """Refuse a scan whose float32 array (4 bytes per voxel) would exceed the budget."""
    budget = max_scan_bytes(max_bytes)
    if 4 * n_voxels > budget:
        raise _error(
            f"case {name}: {what} declares {n_voxels:,} voxels ({4 * n_voxels / 2**30:.2f} GiB "
            f"as float32), over the memory budget of {budget / 2**30:.2f} GiB "
            f"(set ${MAX_BYTES_ENV} to allow more)"
        )


@dataclass(frozen=True)
class Declared:
    """What a header declares: sizes (x, y, z order, 2 or 3 axes), spacing of those axes,
    and the number of non-finite voxels found (NIfTI float data; None when not counted)."""

    sizes: tuple[int, ...]
    spacing: tuple[float, ...]
    nonfinite: int | None = None

    @property
    def n_voxels(self) -> int:
        return math.prod(self.sizes)


def check_header(path: Path, name: str, max_bytes: int | None = None) -> Declared:
    """Run the checks of the module docstring on a NIfTI, NRRD or MetaImage file."""
    lower = path.name.lower()
    try:
        if lower.endswith((".nii", ".nii.gz")):
            return _check_nifti(path, name, max_bytes)
        if lower.endswith((".nrrd", ".nhdr")):
            return _check_nrrd(path, name, max_bytes)
        if lower.endswith((".mha", ".mhd")):
            return _check_metaimage(path, name, max_bytes)
    except OSError as error:
        raise _error(f"case {name}: cannot read {path.name} ({error.strerror or error})") from None
    raise _error(f"case {name}: {path.name} is not a NIfTI, NRRD or MetaImage file")


# --- shared -----------------------------------------------------------------------------------


def _check_sizes(sizes, name: str, filename: str) -> tuple[int, ...]:
    if not sizes or any(int(s) < 1 for s in sizes):
        raise _error(f"case {name}: {filename} declares invalid axis sizes {list(sizes)}")
    return tuple(int(s) for s in sizes)


def _check_spacing(spacing, name: str, filename: str, field: str) -> tuple[float, ...]:
    """Every spatial axis needs a finite, positive voxel size (readers would assume 1 mm)."""
    values = tuple(float(s) for s in spacing)
    if not all(math.isfinite(s) and s > 0 for s in values):
        raise _error(
            f"case {name}: {filename} has no usable voxel size ({field} = "
            f"{[round(s, 6) for s in values]}); distances in mm are unknown"
        )
    return values


def _spatial(sizes: tuple[int, ...], name: str, filename: str) -> tuple[int, ...]:
    """The image's spatial axes: 2 or 3, extra axes of size 1 dropped; more is refused."""
    extra = sizes[3:]
    if any(s > 1 for s in extra):
        raise _error(
            f"case {name}: {filename} has {len(sizes)} axes of sizes {list(sizes)}; only 2D or "
            "3D single-component images are read (no time series, vectors or colours)"
        )
    spatial = sizes[:3]
    if len(spatial) < 2:
        raise _error(f"case {name}: {filename} is {len(spatial)}D, not a 2D or 3D image")
    return spatial


def _truncated(name: str, filename: str, sizes, expected: int, found: int):
    shape = " × ".join(str(s) for s in sizes)
    return _error(
        f"case {name}: {filename} is truncated: its header declares {shape} voxels "
        f"({expected:,} bytes) but the file holds {found:,} bytes of voxel data"
    )


def _stream(path: Path, offset: int, encoding: str) -> Iterator[bytes]:
    """The bytes of `path` from `offset` (in the decompressed stream for gzip, bzip2 and
    zlib), `CHUNK` at a time; damaged compressed data raise ScanReadError-worthy errors."""
    if encoding == "raw":
        with open(path, "rb") as handle:
            handle.seek(offset)
            while block := handle.read(CHUNK):
                yield block
        return
    if encoding == "zlib":
        inflater = zlib.decompressobj()
        with open(path, "rb") as handle:
            handle.seek(offset)
            while block := handle.read(CHUNK // 4):
                while block:
                    out = inflater.decompress(block, CHUNK)
                    block = inflater.unconsumed_tail
                    if out:
                        yield out
                if inflater.eof:
                    return
        return
    opener = gzip.open if encoding == "gzip" else bz2.open
    with opener(path, "rb") as handle:
        skipped = 0
        while skipped < offset:
            block = handle.read(min(CHUNK, offset - skipped))
            if not block:
                return
            skipped += len(block)
        while block := handle.read(CHUNK):
            yield block


def _measure(
    path: Path, offset: int, encoding: str, expected: int, dtype: np.dtype | None, name: str
) -> tuple[int, int | None]:
    """(bytes of voxel data available up to `expected`, non-finite count if `dtype` is float)."""
    found, nonfinite, carry = 0, (0 if dtype is not None else None), b""
    try:
        for block in _stream(path, offset, encoding):
            block = block[: expected - found]
            found += len(block)
            if dtype is not None:
                data = carry + block
                usable = len(data) - len(data) % dtype.itemsize
                values = np.frombuffer(data[:usable], dtype=dtype)
                nonfinite += int(values.size - np.count_nonzero(np.isfinite(values)))
                carry = data[usable:]
            if found >= expected:
                break
    except (EOFError, zlib.error, gzip.BadGzipFile, ValueError) as error:
        raise _error(
            f"case {name}: {path.name}: the compressed voxel data are damaged or cut short "
            f"({type(error).__name__})"
        ) from None
    except OSError as error:  # bz2 and gzip report damaged streams as OSError too
        raise _error(f"case {name}: {path.name}: cannot read the voxel data ({error})") from None
    return found, nonfinite


# --- NIfTI ------------------------------------------------------------------------------------

# datatype code → NumPy type (single-component types; the others are refused by name)
_NIFTI_TYPES = {
    2: "u1", 4: "i2", 8: "i4", 16: "f4", 64: "f8", 256: "i1", 512: "u2", 768: "u4",
    1024: "i8", 1280: "u8",
}  # fmt: skip
_NIFTI_REFUSED = {
    1: "1-bit", 32: "complex", 128: "RGB", 1536: "128-bit float", 1792: "complex",
    2048: "complex", 2304: "RGBA",
}  # fmt: skip


def _open_maybe_gzip(path: Path):
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def _check_nifti(path: Path, name: str, max_bytes: int | None) -> Declared:
    """NIfTI-1 (348-byte header) and NIfTI-2 (540 bytes), either byte order."""
    filename = path.name
    try:
        with _open_maybe_gzip(path) as handle:
            head = handle.read(540)
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise _error(f"case {name}: cannot read {filename}: not a gzip file or damaged "
                     f"({type(error).__name__})") from None  # fmt: skip
    fields = _nifti_fields(head, name, filename)
    dim, datatype, pixdim, vox_offset, endian = fields
    ndim = dim[0]
    if not 1 <= ndim <= 7:
        raise _error(f"case {name}: {filename} declares {ndim} dimensions (dim[0])")
    sizes = _check_sizes(dim[1 : ndim + 1], name, filename)
    if datatype in _NIFTI_REFUSED:
        raise _error(
            f"case {name}: {filename} holds {_NIFTI_REFUSED[datatype]} voxels; only "
            "single-component real-valued images are read"
        )
    if datatype not in _NIFTI_TYPES:
        raise _error(f"case {name}: {filename} has unknown datatype code {datatype}")
    if len(sizes) >= 5 and sizes[4] > 1:
        raise _error(
            f"case {name}: {filename} holds {sizes[4]} components per voxel (dim[5]); only "
            "single-component images are read"
        )
    spatial = _spatial(sizes, name, filename)
    spacing = _check_spacing(pixdim[1:4], name, filename, "pixdim[1:4]")
    n_voxels = math.prod(sizes)
    check_budget(n_voxels, name, filename, max_bytes)
    dtype = np.dtype(_NIFTI_TYPES[datatype]).newbyteorder(endian)
    if not math.isfinite(vox_offset) or vox_offset < 0:
        raise _error(f"case {name}: {filename} has an invalid vox_offset {vox_offset}")
    # data never start inside the header: the NIfTI library reads a smaller offset as this
    vox_offset = max(vox_offset, 352 if _nifti_version(head) == 1 else 544)
    expected = n_voxels * dtype.itemsize
    encoding = "gzip" if filename.lower().endswith(".gz") else "raw"
    float_dtype = dtype if dtype.kind == "f" else None
    if encoding == "raw" and float_dtype is None:
        found = max(0, path.stat().st_size - int(vox_offset))
        nonfinite = None
    else:
        found, nonfinite = _measure(path, int(vox_offset), encoding, expected, float_dtype, name)
    if found < expected:
        raise _truncated(name, filename, spatial, expected, min(found, expected))
    return Declared(spatial, spacing, nonfinite)


def _nifti_version(head: bytes) -> int:
    """1 or 2: the NIfTI header version, from sizeof_hdr in either byte order."""
    for endian in "<>":
        if len(head) >= 4:
            (size,) = struct.unpack(endian + "i", head[:4])
            if size == 348:
                return 1
            if size == 540:
                return 2
    return 0


def _nifti_fields(head: bytes, name: str, filename: str):
    """(dim, datatype, pixdim, vox_offset, byte order) from a NIfTI-1 or NIfTI-2 header."""
    for endian in "<>":
        if len(head) < 4:
            break
        (size,) = struct.unpack(endian + "i", head[:4])
        if size == 348 and len(head) >= 348 and head[344:347] in (b"n+1", b"ni1"):
            dim = struct.unpack(endian + "8h", head[40:56])
            (datatype,) = struct.unpack(endian + "h", head[70:72])
            pixdim = struct.unpack(endian + "8f", head[76:108])
            (vox_offset,) = struct.unpack(endian + "f", head[108:112])
            return dim, datatype, pixdim, vox_offset, endian
        if size == 540 and len(head) >= 540 and head[4:7] in (b"n+2", b"ni2"):
            (datatype,) = struct.unpack(endian + "h", head[12:14])
            dim = struct.unpack(endian + "8q", head[16:80])
            pixdim = struct.unpack(endian + "8d", head[104:168])
            (vox_offset,) = struct.unpack(endian + "q", head[168:176])
            return dim, datatype, pixdim, float(vox_offset), endian
    raise _error(f"case {name}: cannot read {filename}: not a NIfTI-1 or NIfTI-2 file")


# --- NRRD -------------------------------------------------------------------------------------

_NRRD_TYPES = {
    1: ("signed char", "int8", "int8_t", "uchar", "unsigned char", "uint8", "uint8_t"),
    2: ("short", "short int", "signed short", "signed short int", "int16", "int16_t", "ushort",
        "unsigned short", "unsigned short int", "uint16", "uint16_t"),
    4: ("int", "signed int", "int32", "int32_t", "uint", "unsigned int", "uint32", "uint32_t",
        "float"),
    8: ("longlong", "long long", "long long int", "signed long long", "signed long long int",
        "int64", "int64_t", "ulonglong", "unsigned long long", "unsigned long long int",
        "uint64", "uint64_t", "double"),
}  # fmt: skip
_NRRD_ENCODINGS = {"raw": "raw", "gzip": "gzip", "gz": "gzip", "bzip2": "bz2", "bz2": "bz2"}
_NRRD_TEXT_ENCODINGS = ("ascii", "text", "txt", "hex")
_SPATIAL_KINDS = ("domain", "space", "none", "???")


def _text_header(path: Path, name: str, end: re.Pattern) -> tuple[str, int]:
    """The header text up to the end of the first match of `end`, and the offset after it
    (the whole file when `end` does not occur: a detached header)."""
    with open(path, "rb") as handle:
        head = handle.read(HEADER_LIMIT)
    match = end.search(head)
    if match is None:
        if len(head) == HEADER_LIMIT:
            raise _error(f"case {name}: {path.name}: header longer than {HEADER_LIMIT} bytes")
        return head.decode("latin-1"), len(head)
    return head[: match.end()].decode("latin-1"), match.end()


def _number_list(text: str, name: str, filename: str, field: str, kind=float) -> list:
    try:
        return [kind(token) for token in text.split()]
    except ValueError:
        raise _error(f"case {name}: {filename}: malformed {field} {text[:60]!r}") from None


def _check_nrrd(path: Path, name: str, max_bytes: int | None) -> Declared:
    filename = path.name
    text, data_start = _text_header(path, name, re.compile(rb"\r?\n\r?\n"))
    lines = text.splitlines()
    if not lines or not lines[0].startswith("NRRD000"):
        raise _error(f"case {name}: cannot read {filename}: not an NRRD file (no NRRD000x line)")
    fields: dict[str, str] = {}
    for line in lines[1:]:
        if line.startswith("#") or ":=" in line or ":" not in line:
            continue
        key, value = line.split(":", 1)
        fields[key.strip().lower()] = value.strip()
    for required in ("type", "dimension", "sizes", "encoding"):
        if required not in fields:
            raise _error(f"case {name}: {filename}: the NRRD header lacks the '{required}' field")
    itemsize = next((n for n, names in _NRRD_TYPES.items() if fields["type"] in names), None)
    if itemsize is None:
        raise _error(f"case {name}: {filename}: unsupported NRRD type {fields['type'][:40]!r}")
    dims = _number_list(fields["dimension"], name, filename, "dimension", int)
    sizes = _check_sizes(_number_list(fields["sizes"], name, filename, "sizes", int), name,
                         filename)  # fmt: skip
    if len(dims) != 1 or dims[0] != len(sizes):
        raise _error(f"case {name}: {filename}: 'dimension' and 'sizes' disagree")
    kinds = fields.get("kinds", "").split()
    for axis, kind in enumerate(kinds[: len(sizes)]):
        if kind.lower() not in _SPATIAL_KINDS and sizes[axis] > 1:
            raise _error(
                f"case {name}: {filename}: axis {axis} is of kind {kind!r} with {sizes[axis]} "
                "values; only single-component images are read"
            )
    spatial = _spatial(sizes, name, filename)
    spacing = _nrrd_spacing(fields, len(sizes), name, filename)[: len(spatial)]
    n_voxels = math.prod(sizes)
    check_budget(n_voxels, name, filename, max_bytes)
    expected = n_voxels * itemsize
    data_path, offset = path, data_start
    if "data file" in fields or "datafile" in fields:
        detached = fields.get("data file", fields.get("datafile", ""))
        if (
            not detached
            or "%" in detached
            or detached.upper().startswith("LIST")
            or (" " in detached)
        ):
            raise _error(f"case {name}: {filename}: unsupported 'data file' {detached[:60]!r}")
        data_path, offset = path.parent / detached, 0
        if not data_path.is_file():
            raise _error(f"case {name}: {filename}: its data file {detached!r} is missing")
    encoding = fields["encoding"].lower()
    if encoding in _NRRD_TEXT_ENCODINGS:
        return Declared(spatial, spacing)  # SimpleITK fails on short text data itself
    if encoding not in _NRRD_ENCODINGS:
        raise _error(f"case {name}: {filename}: unsupported NRRD encoding {encoding[:40]!r}")
    offset += _nrrd_skip(fields, data_path, offset, name, filename)
    found, _ = _measure(data_path, offset, _NRRD_ENCODINGS[encoding], expected, None, name)
    if found < expected:
        raise _truncated(name, filename, spatial, expected, found)
    return Declared(spatial, spacing)


def _nrrd_skip(fields, data_path: Path, offset: int, name: str, filename: str) -> int:
    """Extra bytes before the data: `line skip` lines, then `byte skip` bytes (raw only)."""
    extra = 0
    line_skip = int(_number_list(fields.get("line skip", "0"), name, filename, "line skip",
                                 int)[0] if fields.get("line skip") else 0)  # fmt: skip
    if line_skip:
        with open(data_path, "rb") as handle:
            handle.seek(offset)
            for _ in range(line_skip):
                extra += len(handle.readline())
    byte_skip_text = fields.get("byte skip", "0") or "0"
    byte_skip = _number_list(byte_skip_text, name, filename, "byte skip", int)
    if byte_skip and byte_skip[0] > 0:
        extra += byte_skip[0]
    return extra


def _nrrd_spacing(fields, ndim: int, name: str, filename: str) -> tuple[float, ...]:
    """Voxel sizes of the spatial axes: norms of `space directions`, else `spacings`."""
    if "space directions" in fields:
        tokens = re.findall(r"\([^)]*\)|none", fields["space directions"])
        vectors = [t for t in tokens if t != "none"]
        if not vectors:
            raise _error(f"case {name}: {filename}: 'space directions' has no spatial axis")
        norms = []
        for vector in vectors:
            parts = _number_list(vector.strip("()").replace(",", " "), name, filename,
                                 "space directions")  # fmt: skip
            norms.append(math.sqrt(sum(v * v for v in parts)) if parts else float("nan"))
        return _check_spacing(norms, name, filename, "space directions")
    if "spacings" in fields:
        values = _number_list(fields["spacings"], name, filename, "spacings")
        return _check_spacing(values[:ndim], name, filename, "spacings")
    raise _error(
        f"case {name}: the NRRD header of {filename} has neither 'space directions' nor "
        "'spacings', so distances in mm are unknown"
    )


# --- MetaImage --------------------------------------------------------------------------------

_MET_SIZES = {
    "MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
    "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4,
    "MET_DOUBLE": 8,
}  # fmt: skip


def _check_metaimage(path: Path, name: str, max_bytes: int | None) -> Declared:
    filename = path.name
    text, data_start = _text_header(path, name, re.compile(rb"ElementDataFile\s*=[^\n]*\n"))
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if "=" in line:
            key, value = line.split("=", 1)
            fields[key.strip().lower()] = value.strip()
    match = re.search(r"ElementDataFile\s*=\s*([^\r\n]*)", text)  # the header's last line
    if "ndims" not in fields or "dimsize" not in fields or match is None:
        raise _error(f"case {name}: cannot read {filename}: not a MetaImage header")
    sizes = _check_sizes(_number_list(fields["dimsize"], name, filename, "DimSize", int), name,
                         filename)  # fmt: skip
    element = fields.get("elementtype", "").upper()
    channels = _number_list(fields.get("elementnumberofchannels", "1"), name, filename,
                            "ElementNumberOfChannels", int)  # fmt: skip
    if element.endswith("_ARRAY") or (channels and channels[0] != 1):
        raise _error(
            f"case {name}: {filename} holds several components per voxel; only "
            "single-component images are read"
        )
    if element not in _MET_SIZES:
        raise _error(f"case {name}: {filename}: unsupported ElementType {element[:40]!r}")
    spatial = _spatial(sizes, name, filename)
    spacing_text = fields.get("elementspacing") or fields.get("elementsize")
    if spacing_text is None:
        raise _error(
            f"case {name}: {filename} has no ElementSpacing, so distances in mm are unknown"
        )
    values = _number_list(spacing_text, name, filename, "ElementSpacing")
    spacing = _check_spacing(values[: len(spatial)], name, filename, "ElementSpacing")
    if len(spacing) < len(spatial):
        raise _error(f"case {name}: {filename}: ElementSpacing has too few values")
    n_voxels = math.prod(sizes)
    check_budget(n_voxels, name, filename, max_bytes)
    expected = n_voxels * _MET_SIZES[element]
    data_file = match.group(1).strip()
    if data_file.upper() == "LOCAL":
        data_path, offset = path, data_start
    elif data_file and "%" not in data_file and not data_file.upper().startswith("LIST"):
        data_path, offset = path.parent / data_file, 0
        if not data_path.is_file():
            raise _error(f"case {name}: {filename}: its data file {data_file!r} is missing")
        skip = _number_list(fields.get("headersize", "0"), name, filename, "HeaderSize", int)
        offset = skip[0] if skip and skip[0] > 0 else 0
    else:
        raise _error(f"case {name}: {filename}: unsupported ElementDataFile {data_file[:60]!r}")
    compressed = fields.get("compresseddata", "false").lower() == "true"
    found, _ = _measure(data_path, offset, "zlib" if compressed else "raw", expected, None, name)
    if found < expected:
        raise _truncated(name, filename, spatial, expected, found)
    return Declared(spatial, spacing)
