"""One streaming pass over a dataset's chunks into per-column statistics (and, only for columns that
turned out to be strings after their first chunk, a second pass that counts their values)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pyarrow as pa

from modelhost.monitor.columns import ColumnStats
from modelhost.monitor.readers import Chunk


class Analysis:
    def __init__(self, names: list[str] | None = None) -> None:
        self.columns: dict[str, ColumnStats] = {n: ColumnStats(n) for n in names or []}
        self.item_count = 0
        self._counting: set[str] = set()  # counting values since their first chunk

    def run(self, chunks: Callable[[], Iterator[Chunk]]) -> Analysis:
        late: set[str] = set()
        for chunk in chunks():
            self.item_count += chunk.rows
            seen = set()
            for name, values in zip(chunk.names, chunk.columns, strict=True):
                col = self.columns.get(name)
                first = col is None or (col.present + col.missing) == 0
                if col is None:
                    col = self.columns[name] = ColumnStats(name)
                    col.missing = self.item_count - chunk.rows  # rows before this column appeared
                seen.add(name)
                had_strings = col.strings
                col.update(values, strings=name in self._counting, typed=chunk.typed)
                if col.strings and not had_strings and name not in self._counting:
                    if first:
                        col.count_values(_valid(values))
                        self._counting.add(name)
                    else:
                        late.add(name)
            for name, col in self.columns.items():
                if name not in seen:
                    col.missing += chunk.rows
        if late:  # strings showed up after the first chunk: count those columns' values from the start
            for name in late:
                self.columns[name].categories = {}
            for chunk in chunks():
                for name, values in zip(chunk.names, chunk.columns, strict=True):
                    if name in late:
                        self.columns[name].count_values(_valid(values))
        return self

    def ordered(self) -> list[ColumnStats]:
        return list(self.columns.values())


def _valid(values: pa.Array) -> pa.Array:
    return values.drop_null() if values.null_count else values
