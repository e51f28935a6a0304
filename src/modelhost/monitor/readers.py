"""Datasets as chunks of string columns: CSV (with or without a header), JSON Lines, Parquet.

Every reader yields ``Chunk``s of at most about ``BLOCK`` bytes, so memory does not grow with the
dataset. Values stay strings (null = missing) — the analyzer infers types itself, as SageMaker's does.
Files are the dataset's files under ``dataset_source`` in key order.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv

BLOCK = 4 << 20
ROWS = 65_536  # rows per chunk for the readers that build arrays themselves


@dataclass
class Chunk:
    names: list[str]
    columns: list[pa.Array]  # strings (int64 / double / non-numeric strings from a typed read)
    rows: int
    typed: bool = False


class DatasetError(Exception):
    """The dataset cannot be read as configured (the job fails with this reason)."""


def data_files(source: Path) -> list[Path]:
    if source.is_file():
        return [source]
    files = sorted(p for p in source.rglob("*") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise DatasetError(f"No data files found under {source}.")
    return files


def _strings(values: list[Any]) -> pa.Array:
    return pa.array([None if v is None or v == "" else str(v) for v in values], pa.string())


class TypeConflict(Exception):
    """A typed read met a value its column's inferred type cannot hold: read the dataset as strings."""


def csv_chunks(files: list[Path], header: bool, typed: bool = False) -> Iterator[Chunk]:
    """``typed``: let Arrow's parser infer int64 / double / string per column (from each file's first
    block) and parse in its threads — the fast path for baselines; a later value that does not fit
    raises TypeConflict."""
    names: list[str] | None = None
    for path in files:
        if path.stat().st_size == 0:
            continue
        with path.open("rb") as f:
            first = f.readline().decode("utf-8", "replace").rstrip("\r\n")
        fields = next(csv.reader([first]), [])
        file_names = fields if header else [f"_c{i}" for i in range(len(fields))]
        if names is None:
            names = file_names
        read = pacsv.ReadOptions(block_size=BLOCK, column_names=names, skip_rows=1 if header else 0)
        convert = pacsv.ConvertOptions(
            column_types={} if typed else {n: pa.string() for n in names},
            strings_can_be_null=True,
            null_values=[""],
            true_values=[] if typed else None,  # booleans stay strings
            false_values=[] if typed else None,
            timestamp_parsers=[] if typed else None,
        )
        try:
            reader = pacsv.open_csv(path, read_options=read, convert_options=convert)
            for batch in reader:
                yield Chunk(list(names), list(batch.columns), batch.num_rows, typed)
        except pa.ArrowInvalid as exc:
            if typed and "conversion error" in str(exc).lower():
                raise TypeConflict(str(exc)) from None
            raise DatasetError(f"{path.name}: {exc}") from None


def json_lines_chunks(files: list[Path]) -> Iterator[Chunk]:
    return rows_to_chunks(_json_rows(files))


def _json_rows(files: list[Path]) -> Iterator[dict[str, Any] | list[Any]]:
    for path in files:
        with path.open("rb") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    yield flat(json.loads(line))
                except ValueError:
                    raise DatasetError(f"{path.name} line {number} is not JSON.") from None


def flat(value: Any) -> dict[str, Any] | list[Any]:
    """A flat row from a JSON value: an object keeps its keys, a list its positions, a scalar is one column."""
    if isinstance(value, dict):
        return value
    if isinstance(value, list):
        return value
    return [value]


def parquet_chunks(files: list[Path]) -> Iterator[Chunk]:
    import pyarrow.parquet as pq

    for path in files:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=ROWS):
            cols = [c.cast(pa.string()) for c in batch.columns]
            yield Chunk(list(batch.schema.names), cols, batch.num_rows)


def rows_to_chunks(rows: Iterator[dict[str, Any] | list[Any]], names: list[str] | None = None) -> Iterator[Chunk]:
    """Rows (objects by key, or lists by position) into chunks; positional columns are named by ``names``
    then ``_c<i>``; the chunk has as many columns as the widest row seen."""
    known: list[str] = list(names or [])
    buffer: list[dict[str, Any] | list[Any]] = []

    def emit() -> Chunk:
        for row in buffer:
            if isinstance(row, dict):
                known.extend(k for k in row if k not in known)
            else:
                known.extend(f"_c{i}" for i in range(len(known), len(row)))
        cols: list[list[Any]] = [[] for _ in known]
        for row in buffer:
            for i, name in enumerate(known):
                if isinstance(row, dict):
                    cols[i].append(row.get(name))
                else:
                    cols[i].append(row[i] if i < len(row) else None)
        return Chunk(list(known), [_strings(c) for c in cols], len(buffer))

    for row in rows:
        buffer.append(row)
        if len(buffer) >= ROWS:
            yield emit()
            buffer = []
    if buffer:
        yield emit()


def open_dataset(dataset_format: dict[str, Any], source: Path, typed: bool = False) -> Callable[[], Iterator[Chunk]]:
    """A way to read the dataset (again: a second pass may be needed) for a ``dataset_format``."""
    files = data_files(source)
    if "csv" in dataset_format:
        header = bool((dataset_format["csv"] or {}).get("header", True))
        return lambda: csv_chunks(files, header, typed)
    if "json" in dataset_format:
        return lambda: json_lines_chunks(files)
    if "parquet" in dataset_format:
        return lambda: parquet_chunks(files)
    raise DatasetError(f"Unsupported dataset_format: {json.dumps(dataset_format)}")
