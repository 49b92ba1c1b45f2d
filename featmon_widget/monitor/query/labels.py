"""Feature labels: what a feature means, in words, from a dict or a file.

Files: JSON (an object `{"12": "text"}`, or a list of records), JSON Lines (one record per
line), CSV (a header row), each optionally gzip-compressed (`.gz`). A record gives its feature
in `index`, `feature`, `feature_index` or `featureIndex` and its text in `description`,
`explanation` or `label`: a Neuronpedia explanations export (`index`, `description`) reads as it
is. When a feature has several records, the first one counts.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ...checks import check_text, cut, is_int

INDEX_FIELDS = ("index", "feature", "feature_index", "featureIndex")
TEXT_FIELDS = ("description", "explanation", "label")
# A label is cut to this many characters when stored; snapshots cut it further.
MAX_LABEL_CHARS = 500
MAX_LABEL_FILE_BYTES = 256 << 20


def load_labels(source: Mapping[Any, Any] | str | Path, d_sae: int) -> dict[int, str]:
    """Labels from a mapping or a file, checked against `d_sae`; raises ValueError/TypeError
    naming the bad entry (nothing is partly loaded). A file that cannot be read as labels
    (bad gzip, bad UTF-8, bad JSON, a bad record) raises ValueError naming the file and the
    line or record."""
    if isinstance(source, Mapping):
        entries: Iterable[tuple[str, Any, Any]] = (
            ("labels", key, text) for key, text in source.items())
        wrong_type: type[Exception] = TypeError
    elif isinstance(source, (str, Path)):
        # A file's content is a value, not an argument: whatever is wrong in it is a ValueError.
        entries, wrong_type = _read_file(Path(source)), ValueError
    else:
        raise TypeError(f"labels must be a dict or a file path, got {type(source).__name__}")
    labels: dict[int, str] = {}
    for where, key, text in entries:
        feature = _feature(key, d_sae, where, wrong_type)
        if not isinstance(text, str):
            raise wrong_type(f"{where}: the label of feature {feature} must be text, got "
                            f"{type(text).__name__}")
        check_text(f"{where}: the label of feature {feature}", text)
        labels.setdefault(feature, text.strip()[:MAX_LABEL_CHARS])
    return labels


def _feature(key: Any, d_sae: int, where: str, wrong_type: type[Exception]) -> int:
    # ASCII digits only: "²".isdigit() is true, but it is no index.
    if isinstance(key, str) and key.strip().isascii() and key.strip().isdigit():
        key = int(key.strip())
    if not is_int(key):
        raise wrong_type(f"{where}: a feature index must be an int, got {cut(repr(key), 80)}")
    if not 0 <= key < d_sae:
        raise ValueError(f"{where}: feature index {key} is outside 0..{d_sae - 1}")
    return int(key)


def _read_file(path: Path) -> list[tuple[str, Any, Any]]:
    """(where, index, text) of every record in the file; `where` names the file and the line
    or record."""
    if not path.is_file():
        raise FileNotFoundError(f"labels file not found: {str(path)!r}")
    if path.stat().st_size > MAX_LABEL_FILE_BYTES:
        raise ValueError(f"{path}: labels file is larger than {MAX_LABEL_FILE_BYTES} bytes")
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        raw = _gunzip(path)
        suffixes = suffixes[:-1]
    else:
        raw = path.read_bytes()
    text = _decode(raw, path)
    kind = suffixes[-1] if suffixes else ""
    if kind == ".csv":
        return _csv_records(text, path)
    if kind == ".jsonl":
        return [_pair(_json(line, f"{path}, line {n}"), f"{path}, line {n}")
                for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    data = _json(text, str(path))
    if isinstance(data, dict):
        return [(f"{path}, key {cut(repr(k), 40)}", k, v) for k, v in data.items()]
    if isinstance(data, list):
        return [_pair(record, f"{path}, record {n}") for n, record in enumerate(data, 1)]
    raise ValueError(f"{path}: expected an object or a list of records, got "
                     f"{type(data).__name__}")


def _gunzip(path: Path) -> bytes:
    """The decompressed file, refused once it passes the size limit (a small file can expand
    a thousandfold: the limit applies to what it expands to)."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read(MAX_LABEL_FILE_BYTES + 1)
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
        raise ValueError(f"{path} is not a readable gzip file ({cut(str(exc), 120)})") from None
    if len(raw) > MAX_LABEL_FILE_BYTES:
        raise ValueError(f"{path}: decompressed labels are larger than "
                         f"{MAX_LABEL_FILE_BYTES} bytes")
    return raw


def _decode(raw: bytes, path: Path) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ValueError(f"{path}, line {line}: not UTF-8 text ({exc.reason} at byte "
                         f"{exc.start})") from None


def _json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        place = f", line {exc.lineno}" if "line " not in where else ""
        raise ValueError(f"{where}{place}: not valid JSON ({exc.msg})") from None
    except RecursionError:
        raise ValueError(f"{where}: JSON nested too deeply") from None


def _csv_records(text: str, path: Path) -> list[tuple[str, Any, Any]]:
    reader = csv.DictReader(io.StringIO(text))
    out = []
    try:
        for record in reader:
            out.append(_pair(record, f"{path}, line {reader.line_num}"))
    except csv.Error as exc:
        raise ValueError(f"{path}, line {reader.line_num}: not valid CSV ({exc})") from None
    return out


def _pair(record: Any, where: str) -> tuple[str, Any, Any]:
    if not isinstance(record, dict):
        raise ValueError(f"{where}: a label record must be an object, got "
                         f"{cut(repr(record), 80)}")
    index = next((record[k] for k in INDEX_FIELDS if record.get(k) not in (None, "")), None)
    text = next((record[k] for k in TEXT_FIELDS if record.get(k) is not None), None)
    if index is None or text is None:
        raise ValueError(f"{where}: a label record needs a feature ({', '.join(INDEX_FIELDS)}) "
                         f"and a text ({', '.join(TEXT_FIELDS)}), got {cut(repr(record), 120)}")
    return where, index, text
