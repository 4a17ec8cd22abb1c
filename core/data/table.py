"""Reading and writing the user's tables (CSV, TSV, JSONL) with errors that point at file, line, field.

Every problem a user can fix in their file is a `DataError` naming the file, the 1-based physical line
(the CSV/TSV header is line 1; a quoted multi-line CSV record is reported at the line where it starts)
and the column. Labels stay strings here; `core.data.labels.LabelMap` turns them into ids.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import ConfigError, DataError

# Long documents (e.g. Lingspam e-mails) exceed csv's default 128 KiB field limit. The limit is
# process-wide; 2**31 - 1 fits a C long on every platform.
csv.field_size_limit(2**31 - 1)

FORMATS: dict[str, str] = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl"}


@dataclass(frozen=True)
class RawRow:
    """One record as read: text, label string (None when absent and not required), 1-based line."""

    text: str
    label: str | None
    line: int
    extra: dict[str, str] = field(default_factory=dict)  # every other column, e.g. orig_label, poisoned


def table_format(path: str | Path) -> str:
    """'csv' | 'tsv' | 'jsonl' from the file's extension; DataError for anything else."""
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise DataError(
            f"unsupported file type {Path(path).suffix or '(no extension)'!r}; "
            f"use one of {', '.join(sorted(FORMATS))}",
            str(path),
        )
    return fmt


def read_table(path: str | Path, text_column: str = "text", label_column: str = "label",
               role: str = "train", require_label: bool = True) -> list[RawRow]:
    """Read a whole table, refusing bad input with a `DataError` (see module docstring)."""
    file = str(path)
    fmt = table_format(path)
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError("file not found", file, role=role) from None
    except OSError as exc:
        raise DataError(f"cannot read file: {exc.strerror or exc}", file, role=role) from None

    try:
        content = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataError(
            f"not valid UTF-8 (byte 0x{data[exc.start]:02x}); save the file as UTF-8",
            file, line, _field_of_bad_byte(data, fmt), role,
        ) from None
    content = content.removeprefix("\ufeff")  # Excel writes a byte-order mark
    if not content.strip():
        raise DataError("file is empty", file, role=role)

    records = _jsonl_records(content, file, role) if fmt == "jsonl" else _delimited_records(
        content, "\t" if fmt == "tsv" else ",", file, role, (text_column, label_column), require_label)
    rows = [_to_row(values, line, file, role, text_column, label_column, require_label)
            for line, values in records]
    if not rows:
        raise DataError("file has no data rows" if fmt != "jsonl" else "file is empty", file, role=role)
    return rows


def _delimited_records(content: str, delimiter: str, file: str, role: str, required: tuple[str, str],
                       require_label: bool) -> Iterator[tuple[int, dict[str, str]]]:
    """(start line, column -> value) per CSV/TSV record; the header is checked before any row."""
    reader = csv.reader(io.StringIO(content, newline=""), delimiter=delimiter)
    prev_end = 0  # reader.line_num after the previous record: the next record starts one line later
    header: list[str] | None = None
    try:
        for values in reader:
            start, prev_end = prev_end + 1, reader.line_num
            if not values or (len(values) == 1 and not values[0].strip()):
                continue  # blank line
            if header is None:
                header = _check_header([v.strip() for v in values], file, start, role, required,
                                       require_label, delimiter)
                continue
            if len(values) > len(header):
                raise DataError(f"row has {len(values)} fields but the header has {len(header)}",
                                file, start, role=role)
            if len(values) < len(header) and reader.line_num > start:
                # Usually an unclosed quote that swallowed the following lines.
                raise DataError(f"row has {len(values)} fields but the header has {len(header)}; "
                                "a quote opened on this line may never be closed", file, start, role=role)
            # A short row leaves trailing columns empty, so a missing label reads as "missing label".
            yield start, dict(zip(header, values + [""] * (len(header) - len(values)), strict=True))
    except csv.Error as exc:
        raise DataError(f"malformed {'TSV' if delimiter == chr(9) else 'CSV'}: {exc}", file,
                        reader.line_num, role=role) from None


def _check_header(header: list[str], file: str, line: int, role: str, required: tuple[str, str],
                  require_label: bool, delimiter: str) -> list[str]:
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise DataError(f"duplicate column {name!r} in the header", file, line, name, role)
        seen.add(name)
    text_column, label_column = required
    for column in (text_column, label_column) if require_label else (text_column,):
        if column not in seen:
            hint = ""
            other = "," if delimiter == "\t" else "\t"
            if len(header) == 1 and other in header[0]:
                kind = "comma" if other == "," else "tab"
                hint = f" (the header looks {kind}-separated: check the file's extension)"
            raise DataError(f"missing column {column!r}; the header has {header}{hint}", file, line,
                            column, role)
    return header


def _jsonl_records(content: str, file: str, role: str) -> Iterator[tuple[int, dict[str, object]]]:
    for number, text in enumerate(content.splitlines(), start=1):
        if not text.strip():
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"malformed JSON: {exc.msg} (column {exc.colno}); "
                            "the file must hold one JSON object per line", file, number, role=role) from None
        if not isinstance(value, dict):
            raise DataError(f"expected a JSON object on each line, found {type(value).__name__}",
                            file, number, role=role)
        yield number, value


def _to_row(values: dict[str, object], line: int, file: str, role: str, text_column: str,
            label_column: str, require_label: bool) -> RawRow:
    if text_column not in values:  # JSONL only: CSV/TSV checked the header
        raise DataError(f"missing field {text_column!r}", file, line, text_column, role)
    text = values[text_column]
    if not isinstance(text, str):
        raise DataError(f"text must be a string, found {_json_type(text)}", file, line, text_column, role)
    if not text.strip():
        raise DataError("empty text", file, line, text_column, role)

    label = _label_string(values.get(label_column), file, line, label_column, role)
    if label is None and require_label:
        raise DataError("missing label", file, line, label_column, role)

    extra = {k: _cell_string(v) for k, v in values.items() if k not in (text_column, label_column)}
    return RawRow(text=text, label=label, line=line, extra=extra)


def _label_string(value: object, file: str, line: int, column: str, role: str) -> str | None:
    """A label cell as a string, so JSON 1, 1.0 and "1" all become "1"; None/blank -> None."""
    if value is None:
        return None
    if isinstance(value, bool):  # bool is an int subclass; true/false is almost surely a mistake
        raise DataError("label must be a string or an integer, found a boolean", file, line, column, role)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer():
            return str(int(value))
        raise DataError(f"label must be a string or an integer, found {value!r}", file, line, column, role)
    if isinstance(value, str):
        return value.strip() or None
    raise DataError(f"label must be a string or an integer, found {_json_type(value)}", file, line,
                    column, role)


def _cell_string(value: object) -> str:
    """Extra JSON values as strings: true/false -> "1"/"0" (poisoned flags), integral floats as ints."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    if isinstance(value, (str, int, float)):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


def _json_type(value: object) -> str:
    return {dict: "an object", list: "an array", bool: "a boolean", int: "a number",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def _field_of_bad_byte(data: bytes, fmt: str) -> str | None:
    """Best effort: the column holding the first non-UTF-8 byte (None if it cannot be told)."""
    text = data.decode("utf-8", errors="surrogateescape")  # bad bytes become U+DC80..U+DCFF

    def bad(s: object) -> bool:
        return isinstance(s, str) and any("\udc80" <= ch <= "\udcff" for ch in s)

    try:
        if fmt == "jsonl":
            for line in text.splitlines():
                if bad(line):
                    obj = json.loads(line)
                    return next((k for k, v in obj.items() if bad(k) or bad(v)), None)
            return None
        reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t" if fmt == "tsv" else ",")
        header = next(reader)
        if any(bad(h) for h in header):
            return None
        for values in reader:
            for name, value in zip(header, values, strict=False):
                if bad(value):
                    return name.strip()
    except Exception:  # the field is only a hint; the UTF-8 error is reported regardless
        return None
    return None


def write_table(path: str | Path, rows: list[dict[str, object]], columns: list[str]) -> None:
    """Write rows in the format of `path`'s extension. CSV/TSV cells are str() (None -> empty);
    JSONL keeps JSON types. Readable back by `read_table`."""
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise ConfigError(f"cannot write {str(path)!r}: unsupported extension; use one of "
                          f"{', '.join(sorted(FORMATS))}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        if fmt == "jsonl":
            for row in rows:
                handle.write(json.dumps({c: row.get(c) for c in columns}, ensure_ascii=False) + "\n")
            return
        writer = csv.writer(handle, delimiter="\t" if fmt == "tsv" else ",", lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if row.get(c) is None else str(row.get(c)) for c in columns])
