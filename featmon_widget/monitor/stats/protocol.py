"""What crosses the boundary between Python and the C kernels (`csrc/*.c`), declared once here.

The codes both sides use (dense dtype codes, the in-place activation, the examples' feature
kinds, the scans' metric codes, the layout of a TopK table record, the firing histogram's bins),
the CPU targets every vectorized C function is compiled for, and, from each kernel wrapper's
`C_FUNCTIONS`, every exported function's signature. `render_header` writes them all as
`csrc/featmon_protocol.h` (`scripts/generate_protocol.py`; its `--check` fails when the header
differs, edited by hand or stale). Every C file includes the header, so the compiler checks
each definition against its declaration, and `bind` gives the ctypes functions their argument
types from the same declarations: nothing is kept in sync by hand.
"""

from __future__ import annotations

import ctypes
import re
from collections.abc import Iterable
from typing import Any, NamedTuple

import torch

from ...snapshot.frequency import FREQUENCY_BIN_COUNT
from ...snapshot.value_bins import DIST_BIN_BIAS, DIST_BINS, DIST_LOG_BINS
from ...types import METRICS

HEADER = "featmon_protocol.h"

# The dense statistics kernel's dtype codes.
DENSE_DTYPES = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}
# The activation the dense kernel applies in place (ACT_JUMP: JumpReLU; -inf thresholds: ReLU).
ACT_NONE, ACT_JUMP = 0, 1
# How the example merge reads the forward's features: dense float32 / bfloat16 [N, F], or
# TopK (indices, float32 values) [N, k].
EXAMPLE_KINDS = {torch.float32: 0, torch.bfloat16: 1}
# The sample's key hash (record/samples.py): a feature's salt is fmix32(feature * SAMPLE_SALT),
# the high half of its key of a token ((hi ^ salt) * SAMPLE_MIX mod 2**32) >> 1.
SAMPLE_SALT = 0x9E3779B1
SAMPLE_MIX = 0x85EBCA6B
KIND_TOPK = 2
# The scans' metric codes: the order of `featmon_widget.types.METRICS`.
METRIC_CODES = {name: code for code, name in enumerate(METRICS)}
# One TopK table record (`pending.PendingSparse`): these doubles per feature, in this order.
RECORD_FIELDS = ("stored", "nonfinite", "active", "active_sum", "s1", "s2", "min", "max")
RECORD = len(RECORD_FIELDS)
# Bins of the firing-frequency histogram the scan fills: the snapshot's histogram.
SCAN_BINS = FREQUENCY_BIN_COUNT

# `VECTOR_CLONES` functions are compiled once per target and the best one for the CPU is picked
# when the library loads (gcc's function multiversioning on x86-64; plain C elsewhere).
# x86-64-v4 (AVX-512 F/BW/DQ/VL) rather than plain avx512f: the scans convert int64 counts to
# double, which only AVX-512 DQ does in vectors; x86-64-v3 is AVX2 with FMA (and F16C).
VECTOR_TARGETS = ("arch=x86-64-v4", "arch=x86-64-v3", "default")

_CTYPES = {"void": None, "int": ctypes.c_int, "int64_t": ctypes.c_int64,
           "int32_t": ctypes.c_int32, "double": ctypes.c_double, "float": ctypes.c_float}
_PARAM = re.compile(r"^(?P<type>.*?[\s*])(?P<name>\w+)$")


class CFunction(NamedTuple):
    """One exported C function: its return type, name and parameters as C declarations
    (`"const int64_t *idx"`); pointers pass as `data_ptr()` integers."""

    restype: str
    name: str
    params: tuple[str, ...]

    def prototype(self) -> str:
        """The C declaration, wrapped to 100 columns."""
        head = f"{self.restype} {self.name}("
        lines, line = [], head
        for i, param in enumerate(self.params):
            piece = param + (", " if i < len(self.params) - 1 else ");")
            if len(line) + len(piece.rstrip()) > 100:
                lines.append(line.rstrip())
                line = " " * len(head)
            line += piece
        return "\n".join([*lines, line])

    def argtypes(self) -> list[Any]:
        """The ctypes argument types (every pointer a `c_void_p`)."""
        return [_ctype(param) for param in self.params]


def _ctype(param: str) -> Any:
    match = _PARAM.match(param.strip())
    if match is None:
        raise ValueError(f"not a C parameter declaration: {param!r}")
    kind = match["type"].replace("const", "").strip()
    if kind.endswith("*"):
        return ctypes.c_void_p
    return _CTYPES[kind]


class CFunctions:
    """A loaded library's functions, each with its ctypes signature set (see `bind`)."""

    def __init__(self, library: ctypes.CDLL, functions: Iterable[CFunction]) -> None:
        for fn in functions:
            bound = getattr(library, fn.name)
            bound.argtypes = fn.argtypes()
            bound.restype = _CTYPES[fn.restype]
            setattr(self, fn.name, bound)


def bind(library: ctypes.CDLL, functions: Iterable[CFunction]) -> CFunctions:
    """`library`'s `functions`, argument and return types taken from their declarations."""
    return CFunctions(library, functions)


def _enum(names_values: Iterable[tuple[str, int]]) -> str:
    items = [f"{name} = {value}" for name, value in names_values]
    line = "enum { " + ", ".join(items) + " };"
    return line if len(line) <= 100 else "enum {\n" + "".join(f"    {i},\n" for i in items) + "};"


def render_header(kernels: Iterable[tuple[str, tuple[CFunction, ...]]]) -> str:
    """`csrc/featmon_protocol.h`: the codes and targets above, then the prototypes of
    `kernels` (each (source file, its functions))."""
    targets = ", ".join(f'"{t}"' for t in VECTOR_TARGETS)
    dtype = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16"}
    parts = [
        "/* GENERATED by scripts/generate_protocol.py from featmon_widget/monitor/stats/"
        "protocol.py:\n * do not edit (its --check fails on any difference). What the C "
        "kernels and their\n * Python callers share: the codes passed across the boundary, "
        "the CPU targets of the\n * vectorized functions, and every exported function's "
        "prototype (each kernel source\n * includes this file, so the compiler checks its "
        "definitions against them). */",
        "#ifndef FEATMON_PROTOCOL_H\n#define FEATMON_PROTOCOL_H\n\n"
        "#include <stdint.h>\n#include <string.h>",
        "/* Wider vectors where the CPU has them, chosen when the library loads (gcc's function\n"
        " * multiversioning; plain C elsewhere). x86-64-v4 rather than plain avx512f: int64 ->"
        " double\n * conversions (the scans) vectorize only with AVX-512 DQ. */\n"
        "#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)\n"
        f"#define VECTOR_CLONES __attribute__((target_clones({targets})))\n"
        "#else\n#define VECTOR_CLONES\n#endif",
        "/* Dense features' dtypes (DENSE_DTYPES). */\n"
        + _enum((f"DTYPE_{dtype[t]}", code) for t, code in DENSE_DTYPES.items()),
        "/* The activation the dense kernel applies in place: none, or JumpReLU. */\n"
        + _enum([("ACT_NONE", ACT_NONE), ("ACT_JUMP", ACT_JUMP)]),
        "/* How the example merge reads a forward's features (EXAMPLE_KINDS, KIND_TOPK). */\n"
        + _enum([*((f"KIND_{dtype[t]}", code) for t, code in EXAMPLE_KINDS.items()),
                 ("KIND_TOPK", KIND_TOPK)]),
        "/* The scans' metrics, numbered as METRIC_CODES (the order of types.METRICS). */\n"
        + _enum([*((f"METRIC_{name.upper()}", code) for name, code in METRIC_CODES.items()),
                 ("N_METRICS", len(METRIC_CODES))]),
        "/* A TopK table record: RECORD doubles per feature, in this order. */\n"
        + _enum([*((f"RECORD_{name.upper()}", i) for i, name in enumerate(RECORD_FIELDS)),
                 ("RECORD", RECORD)]),
        "/* Bins of the firing-frequency histogram. */\n" + _enum([("SCAN_BINS", SCAN_BINS)]),
        "/* Value distributions: bins per feature (the last: inactive), log bins, the bias. */\n"
        + _enum([("DIST_BINS", DIST_BINS), ("DIST_LOG_BINS", DIST_LOG_BINS),
                 ("DIST_BIN_BIAS", DIST_BIN_BIAS)]),
        "/* Dense features as float32, one definition for every kernel: bfloat16 is the top\n"
        " * half of a float32; a half's 15 low bits moved into float position are its value\n"
        " * times 2^-112 (normal and subnormal alike), all-ones exponents become Inf / NaN. */\n"
        "static inline float featmon_bf16_to_f32(uint16_t h) {\n"
        "    const uint32_t bits = (uint32_t)h << 16;\n    float v;\n"
        "    memcpy(&v, &bits, sizeof v);\n    return v;\n}\n"
        "static inline float featmon_f16_to_f32(uint16_t h) {\n"
        "    const uint32_t magnitude = (uint32_t)(h & 0x7FFF) << 13;\n    float v;\n"
        "    memcpy(&v, &magnitude, sizeof v);\n    v *= 0x1p112f;\n"
        "    uint32_t special = magnitude | 0x7F800000u, bits;\n"
        "    memcpy(&bits, &v, sizeof bits);\n"
        "    bits = (h & 0x7FFF) >= 0x7C00 ? special : bits;\n"
        "    bits |= (uint32_t)(h & 0x8000) << 16;\n"
        "    memcpy(&v, &bits, sizeof v);\n    return v;\n}",
        "/* The sample's key hash (record/samples.py), one definition for every kernel that\n"
        " * hashes: murmur3's 32-bit finalizer, a feature's salt, and the high half of its key\n"
        " * of a token whose hash's high half is hi. */\n"
        f"#define SAMPLE_SALT 0x{SAMPLE_SALT:08X}u\n#define SAMPLE_MIX 0x{SAMPLE_MIX:08X}u\n"
        "static inline uint32_t featmon_fmix32(uint32_t h) {\n"
        "    h ^= h >> 16;\n    h *= 0x85EBCA6Bu;\n    h ^= h >> 13;\n    h *= 0xC2B2AE35u;\n"
        "    h ^= h >> 16;\n    return h;\n}\n"
        "static inline uint32_t featmon_sample_salt(int64_t i) {\n"
        "    return featmon_fmix32((uint32_t)i * SAMPLE_SALT);\n}\n"
        "static inline uint32_t featmon_sample_high(uint32_t hi, uint32_t salt) {\n"
        "    return ((hi ^ salt) * SAMPLE_MIX) >> 1;\n}",
    ]
    for source, functions in kernels:
        parts.append(f"/* {source} */\n" + "\n".join(fn.prototype() for fn in functions))
    parts.append("#endif")
    return "\n\n".join(parts) + "\n"
