"""Building the native kernels' shared libraries, and deciding which may be loaded.

A kernel source (`csrc/*.c`, with the shared header `csrc/featmon_protocol.h`) is compiled with
the system C compiler into a per-user cache folder, keyed by the source, the header, compiler,
flags and platform. What is loaded must be ours: the folder is owner-only (one anyone else can
write to is refused), and a library loads only if it matches the SHA-256 recorded next to it
when it was built; anything else under that name is rebuilt over. Which flags each kernel is
built with is part of its registration (`backend.KERNELS`); the flag sets are here.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from .protocol import HEADER

DEFAULT_FLAGS = ("-O2", "-std=c99", "-shared", "-fPIC")
# -fno-trapping-math lets gcc if-convert (and so vectorize) the float compares.
VECTOR_FLAGS = ("-O3", "-fno-trapping-math", "-std=c99", "-shared", "-fPIC", "-pthread")
# The statistics kernel: fused multiply-adds for the sums of squares (-std=c99 alone forbids
# contracting them), and OpenMP, which next to torch's CPU build is torch's own runtime and
# thread pool (see csrc/dense_moments.c); without an OpenMP-capable compiler, pthreads.
DENSE_FLAGS = (*VECTOR_FLAGS, "-ffp-contract=fast")
# The scans: -fno-math-errno lets the sample deviation's sqrt be one vector instruction.
SCAN_FLAGS = (*VECTOR_FLAGS, "-fno-math-errno")
OPENMP = "-fopenmp"


def build_library(name: str, flag_choices: Sequence[Sequence[str]] = (DEFAULT_FLAGS,)) -> Path:
    """Compile kernel source `name` into the cache folder (once per source, header, compiler
    and flags; if the compiler refuses the first choice of flags, the next); its path."""
    errors = []
    for flags in flag_choices:
        try:
            return _build(name, list(flags))
        except RuntimeError as exc:
            errors.append(str(exc))
    raise RuntimeError("; ".join(errors))


def _build(name: str, flags: list[str]) -> Path:
    csrc = resources.files(__package__).joinpath("csrc")
    source, header = csrc.joinpath(name).read_bytes(), csrc.joinpath(HEADER).read_bytes()
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise RuntimeError("no C compiler found (set CC)")
    key = hashlib.sha256(b"\0".join([source, header, compiler.encode(),
                                     " ".join(flags).encode(), platform.machine().encode(),
                                     platform.system().encode()])).hexdigest()[:16]
    cache = _private_cache_dir()
    target = cache / f"{Path(name).stem}-{key}.so"
    if _verified(target):
        return target
    with tempfile.TemporaryDirectory(dir=cache) as work:
        src = Path(work) / name
        src.write_bytes(source)
        (Path(work) / HEADER).write_bytes(header)  # found next to the source: #include "..."
        out = Path(work) / target.name
        result = subprocess.run([compiler, *flags, "-o", str(out), str(src)],
                                capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"{compiler} failed: {result.stderr.strip()[-500:]}")
        digest = Path(work) / (target.name + ".sha256")
        digest.write_text(_sha256(out))
        # Atomic, digest first: a concurrent process sees an old pair, or the new one.
        os.replace(digest, target.with_name(target.name + ".sha256"))
        os.replace(out, target)
    if not _verified(target):
        raise RuntimeError(f"the library just built at {target} does not verify")
    return target


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _verified(library: Path) -> bool:
    """Whether `library` is ours to load: owned by this user, writable by nobody else, and
    matching the SHA-256 recorded when it was built (a library planted under the expected name,
    or a truncated one, is not loaded; it is rebuilt over)."""
    digest = library.with_name(library.name + ".sha256")
    if not (library.is_file() and digest.is_file()) or not _owner_only(library):
        return False
    try:
        return digest.read_text().strip() == _sha256(library)
    except OSError:
        return False


def _owner_only(path: Path) -> bool:
    """Owned by this user and not writable by group or others (always true where there are
    no POSIX owners)."""
    if not hasattr(os, "getuid"):
        return True
    info = path.stat()
    return info.st_uid == os.getuid() and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _private_cache_dir() -> Path:
    """The cache folder, made owner-only if new; a folder anyone else can write to is refused
    (its libraries could be replaced between the check and the load)."""
    cache = _cache_dir()
    cache.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not _owner_only(cache):
        raise RuntimeError(f"the kernel cache {cache} is writable by other users or not "
                           "yours; fix its permissions (chmod 700) or set FEATMON_CACHE_DIR")
    return cache


def _cache_dir() -> Path:
    if os.environ.get("FEATMON_CACHE_DIR"):
        return Path(os.environ["FEATMON_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "featmon_widget"
