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
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ...checks import is_int

INDEX_FIELDS = ("index", "feature", "feature_index", "featureIndex")
TEXT_FIELDS = ("description", "explanation", "label")
# A label is cut to this many characters when stored; snapshots cut it further.
MAX_LABEL_CHARS = 500
MAX_LABEL_FILE_BYTES = 256 << 20


def load_labels(source: Mapping[Any, Any] | str | Path, d_sae: int) -> dict[int, str]:
    """Labels from a mapping or a file, checked against `d_sae`; raises ValueError/TypeError
    naming the bad entry (nothing is partly loaded)."""
    if isinstance(source, Mapping):
        pairs: Iterable[tuple[Any, Any]] = source.items()
        where = "labels"
    elif isinstance(source, (str, Path)):
        pairs = _read_file(Path(source))
        where = str(source)
    else:
        raise TypeError(f"labels must be a dict or a file path, got {type(source).__name__}")
    labels: dict[int, str] = {}
    for key, text in pairs:
        feature = _feature(key, d_sae, where)
        if not isinstance(text, str):
            raise TypeError(f"{where}: the label of feature {feature} must be text, got "
                            f"{type(text).__name__}")
        labels.setdefault(feature, text.strip()[:MAX_LABEL_CHARS])
    return labels


def _feature(key: Any, d_sae: int, where: str) -> int:
    if isinstance(key, str) and key.strip().isdigit():
        key = int(key.strip())
    if not is_int(key):
        raise TypeError(f"{where}: a feature index must be an int, got {key!r}")
    if not 0 <= key < d_sae:
        raise ValueError(f"{where}: feature index {key} is outside 0..{d_sae - 1}")
    return int(key)


def _read_file(path: Path) -> list[tuple[Any, Any]]:
    if not path.is_file():
        raise FileNotFoundError(f"labels file not found: {str(path)!r}")
    if path.stat().st_size > MAX_LABEL_FILE_BYTES:
        raise ValueError(f"{path}: labels file is larger than {MAX_LABEL_FILE_BYTES} bytes")
    raw = path.read_bytes()
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        raw = gzip.decompress(raw)
        suffixes = suffixes[:-1]
    text = raw.decode("utf-8-sig")
    kind = suffixes[-1] if suffixes else ""
    if kind == ".csv":
        return [_pair(row, path) for row in csv.DictReader(io.StringIO(text))]
    if kind == ".jsonl":
        return [_pair(json.loads(line), path) for line in text.splitlines() if line.strip()]
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None
    if isinstance(data, dict):
        return list(data.items())
    if isinstance(data, list):
        return [_pair(record, path) for record in data]
    raise ValueError(f"{path}: expected an object or a list of records, got "
                     f"{type(data).__name__}")


def _pair(record: Any, path: Path) -> tuple[Any, Any]:
    if not isinstance(record, dict):
        raise ValueError(f"{path}: a label record must be an object, got {record!r:.80}")
    index = next((record[k] for k in INDEX_FIELDS if record.get(k) not in (None, "")), None)
    text = next((record[k] for k in TEXT_FIELDS if record.get(k) is not None), None)
    if index is None or text is None:
        raise ValueError(f"{path}: a label record needs a feature ({', '.join(INDEX_FIELDS)}) "
                         f"and a text ({', '.join(TEXT_FIELDS)}), got {record!r:.120}")
    return index, text
