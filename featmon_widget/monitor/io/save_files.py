"""The files of a save folder: reading a safetensors header without its data, and replacing a
save atomically.

`tensor_specs` reads only the header of a safetensors file (its first bytes: names, dtypes,
shapes, offsets), so a save's shapes are checked against its JSON before any tensor is read
or anything allocated: each is returned as a `meta` tensor, which holds no data.

`replace_save` writes a save so that a failure at any step leaves the previous save loadable
and no partial file behind: both files are written into a fresh temporary folder inside the
save folder; the tensors file, named by its digest, moves in first; one `os.replace` of
`monitor.json` then switches to the new save; the old tensors file goes last. Saves into one
folder take turns (`folder_lock`), and each uses its own temporary folder, so threads and
processes never share a temporary name. Both files get the mode a new file gets here (0666
minus the umask).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import torch

from ...checks import cut

Tensor = torch.Tensor

JSON_FILE = "monitor.json"
# Format versions 1 and 2 kept the tensors under one name; version 3 names them by digest.
LEGACY_TENSORS_FILE = "tensors.safetensors"
TENSORS_NAME = re.compile(r"tensors-([0-9a-f]{64})\.safetensors")
# A header holds names, dtypes and shapes only; one larger than this was not written by us.
MAX_HEADER_BYTES = 1 << 27

_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
           "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32, "I16": torch.int16,
           "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}
# Saves into one folder take turns: a lock per folder (by hash, a fixed number of locks).
_LOCKS = [threading.Lock() for _ in range(64)]


def tensors_file_name(digest: str) -> str:
    """The file name of a version-3 save's tensors whose SHA-256 is `digest`."""
    return f"tensors-{digest}.safetensors"


def folder_lock(folder: Path) -> threading.Lock:
    """The lock that saves into (and loads from) `folder` take in this process."""
    return _LOCKS[hash(os.path.realpath(folder)) % len(_LOCKS)]


def sha256_of(path: Path) -> str:
    """The SHA-256 of the file `path`, hex."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


# ---- reading the header ---------------------------------------------------------------------


def tensor_specs(path: Path) -> dict[str, Tensor]:
    """Every tensor of the safetensors file `path` as a `meta` tensor of its shape and dtype
    (nothing is read but the header; nothing is allocated). A ValueError says what is wrong,
    including a tensor whose bytes the file does not hold."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        length = int.from_bytes(head, "little") if len(head) == 8 else -1
        if not 0 < length <= min(MAX_HEADER_BYTES, size - 8):
            raise ValueError(f"{path} is not a safetensors file (header length {length})")
        raw = f.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"{path} has an unreadable header ({cut(str(exc), 80)})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path} has an unreadable header")
    data = size - 8 - length
    return {name: _spec(path, name, entry, data) for name, entry in header.items()
            if name != "__metadata__"}


def _spec(path: Path, name: str, entry: object, data: int) -> Tensor:
    shape = entry.get("shape") if isinstance(entry, dict) else None
    offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
    dtype = _DTYPES.get(entry.get("dtype")) if isinstance(entry, dict) else None  # type: ignore[arg-type]
    ints = isinstance(shape, list) and isinstance(offsets, list) and len(offsets) == 2 and all(
        type(n) is int and 0 <= n <= data for n in (*shape, *offsets))
    if dtype is None or not ints:
        raise ValueError(f"{path}: the header entry of {cut(name, 60)!r} is malformed "
                         f"({cut(repr(entry), 80)})")
    numel = 1
    for n in shape:  # type: ignore[union-attr]
        numel *= n
    start, end = offsets  # type: ignore[misc]
    if end - start != numel * dtype.itemsize:
        raise ValueError(f"{path}: tensor {cut(name, 60)!r} of shape {shape} does not fit its "
                         f"{end - start} bytes: the save is corrupt")
    return torch.empty(shape, dtype=dtype, device="meta")  # type: ignore[arg-type]


# ---- writing --------------------------------------------------------------------------------


def replace_save(folder: Path, write_tensors: Callable[[Path], None],
                 document: Callable[[str, str], str]) -> None:
    """Write a save into `folder` (see module doc): `write_tensors(path)` writes the tensors
    file; `document(name, digest)` gives the JSON naming it. On any failure the previous save
    stays as it was and nothing written stays behind."""
    with folder_lock(folder):
        old = _current_tensors(folder)
        staging = Path(tempfile.mkdtemp(prefix=".featmon-save-", dir=folder))
        try:
            tensors, json_path = staging / LEGACY_TENSORS_FILE, staging / JSON_FILE
            write_tensors(tensors)
            digest = sha256_of(tensors)
            name = tensors_file_name(digest)
            text = document(name, digest)
            # Created as any new file is (0666 minus the umask); the tensors file gets the same.
            fd = os.open(json_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())  # on disk before the replace makes it the save
            os.chmod(tensors, json_path.stat().st_mode & 0o777)
            _fsync(tensors)
            target = folder / name
            kept = target.exists()  # the same tensors saved before: the old save may use them
            os.replace(tensors, target)
            try:
                os.replace(json_path, folder / JSON_FILE)
            except BaseException:
                if not kept:
                    target.unlink(missing_ok=True)
                raise
            if old is not None and old != name:
                (folder / old).unlink(missing_ok=True)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _fsync(path: Path) -> None:
    with path.open("rb") as f:
        os.fsync(f.fileno())


def _current_tensors(folder: Path) -> str | None:
    """The tensors file the save now in `folder` names (None: no readable save there)."""
    try:
        meta = json.loads((folder / JSON_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    if not isinstance(meta, dict):
        return None
    name = meta.get("tensors_file", LEGACY_TENSORS_FILE)
    return name if isinstance(name, str) and (
        name == LEGACY_TENSORS_FILE or TENSORS_NAME.fullmatch(name)) else None
