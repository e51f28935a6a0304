"""One column's streaming statistics over chunks of string values (pyarrow arrays).

Each value is classified as SageMaker's analyzer does (Deequ's data types): missing (empty), Integral
(``[+-]digits``), Fractional (any other number), String. Numeric values feed the count/sum/mean/M2
(Chan's parallel update, so the standard deviation is stable), min/max and a KLL sketch; string
statistics (value counts, distinct count) are kept when asked for. Memory is bounded: the sketch, and
at most ``MAX_CATEGORIES`` counted values.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasketches import kll_doubles_sketch

KLL_K = 2048
KLL_C = 0.64  # the compaction ratio SageMaker reports in sketch.parameters
MAX_CATEGORIES = 10_000
INTEGRAL = r"^[+-]?[0-9]+$"
NUMBER = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"


class ColumnStats:
    def __init__(self, name: str) -> None:
        self.name = name
        self.present = 0
        self.missing = 0
        self.integral = 0
        self.fractional = 0
        self.strings = 0
        self.count = 0  # numeric values
        self.sum = 0.0
        self.mean = 0.0
        self.m2 = 0.0
        self.min = math.inf
        self.max = -math.inf
        self.kll = kll_doubles_sketch(KLL_K)
        self.categories: dict[str, int] = {}
        self.categories_complete = True  # False once MAX_CATEGORIES was passed (counts are then partial)

    @property
    def inferred_type(self) -> str:
        if self.present == 0:
            return "Unknown"
        if self.strings:
            return "String"
        if self.fractional:
            return "Fractional"
        return "Integral"

    def update(self, values: pa.Array, strings: bool = False, typed: bool = False) -> None:
        """Add a chunk of values (strings, null = missing); ``strings``: also count the values;
        ``typed``: from a typed read (a string column there has non-numbers: no cast is tried)."""
        self.missing += values.null_count
        valid = pc.drop_null(values) if values.null_count else values
        n = len(valid)
        if n == 0:
            return
        self.present += n
        nums = self._classify(valid, typed)
        if len(nums):
            self._numeric(nums)
        if strings:
            self.count_values(valid)

    def _classify(self, valid: pa.Array, typed: bool = False) -> np.ndarray:
        if pa.types.is_integer(valid.type):  # parsed by a typed read: every value is Integral
            self.integral += len(valid)
            return valid.to_numpy(zero_copy_only=False).astype(np.float64)
        if pa.types.is_floating(valid.type):  # ... Fractional (a typed read is only used for baselines)
            self.fractional += len(valid)
            return valid.to_numpy(zero_copy_only=False)
        if not pa.types.is_string(valid.type):
            valid = pc.cast(valid, pa.string())
        if typed:
            return self._mixed(valid)
        try:  # the common cases first: the whole chunk parses as integers, or as numbers
            ints = pc.cast(valid, pa.int64())
            self.integral += len(valid)
            return ints.to_numpy(zero_copy_only=False).astype(np.float64)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
        is_int = pc.match_substring_regex(valid, INTEGRAL)
        n_int = int(pc.sum(is_int).as_py() or 0)
        try:
            floats = pc.cast(valid, pa.float64())
            self.integral += n_int
            self.fractional += len(valid) - n_int
            return floats.to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
        return self._mixed(valid)

    def _mixed(self, valid: pa.Array) -> np.ndarray:
        """Numbers and other strings: counted value by value."""
        is_int = pc.match_substring_regex(valid, INTEGRAL)
        n_int = int(pc.sum(is_int).as_py() or 0)
        is_num = pc.match_substring_regex(valid, NUMBER)
        n_num = int(pc.sum(is_num).as_py() or 0)
        self.integral += n_int
        self.fractional += n_num - n_int
        self.strings += len(valid) - n_num
        if n_num == 0:
            return np.empty(0)
        return pc.cast(pc.filter(valid, is_num), pa.float64()).to_numpy(zero_copy_only=False)

    def _numeric(self, x: np.ndarray) -> None:
        n = len(x)
        chunk_mean = float(x.mean())
        chunk_m2 = float(((x - chunk_mean) ** 2).sum())
        total = self.count + n
        delta = chunk_mean - self.mean
        self.mean += delta * n / total
        self.m2 += chunk_m2 + delta * delta * self.count * n / total
        self.count = total
        self.sum += float(x.sum())
        self.min = min(self.min, float(x.min()))
        self.max = max(self.max, float(x.max()))
        self.kll.update(np.require(x, np.float64, ["C", "W"]))  # the binding takes a writable C array

    def count_values(self, valid: pa.Array) -> None:
        if not pa.types.is_string(valid.type):
            valid = pc.cast(valid, pa.string())
        counts = pc.value_counts(valid)
        for value, count in zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True):
            if value in self.categories:
                self.categories[value] += count
            elif len(self.categories) < MAX_CATEGORIES:
                self.categories[value] = count
            else:
                self.categories_complete = False

    @property
    def std_dev(self) -> float:
        return math.sqrt(self.m2 / self.count) if self.count else 0.0  # population, as Deequ

    def integral_share(self) -> float:
        return self.integral / self.present if self.present else 1.0

    def numeric_share(self) -> float:
        return (self.integral + self.fractional) / self.present if self.present else 1.0
