"""One model call for several requests' inputs, and the answer split back per request (dynamic batching).

A runtime's ``predict_batch`` groups the inputs that fit together (same trailing shape and dtype, same
parameters), concatenates each group along the first axis, predicts once and splits the prediction by
each input's row count. An input that fits with nothing runs on its own; a group whose combined call
fails runs again one input at a time, so one bad input fails only itself.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np

Key = Callable[[Any], Hashable | None]  # the group an input belongs to; None: it runs alone
Combine = Callable[[list[Any]], tuple[Any, list[int]]]  # inputs -> (one model input, rows per input)
Split = Callable[[Any, list[int]], Sequence[Any] | None]  # prediction -> per-input parts; None: cannot
Predict = Callable[[Any, Any], Any]


def run_batched(datas: list[Any], model: Any, predict: Predict, key: Key, combine: Combine, split: Split) -> list[Any]:
    """One prediction (or the exception it raised) per input, in order; exceptions given as inputs stay."""
    out: list[Any] = [None] * len(datas)
    groups: dict[Hashable, list[int]] = {}
    alone: list[int] = []
    for i, data in enumerate(datas):
        if isinstance(data, BaseException):
            out[i] = data
            continue
        k = key(data)
        if k is None:
            alone.append(i)
        else:
            groups.setdefault(k, []).append(i)
    for members in groups.values():
        if len(members) == 1:
            alone.extend(members)
            continue
        try:
            combined, sizes = combine([datas[i] for i in members])
            parts = split(predict(combined, model), sizes)
        except Exception:
            parts = None
        if parts is None:
            alone.extend(members)
            continue
        for i, part in zip(members, parts, strict=True):
            out[i] = part
    for i in alone:
        try:
            out[i] = predict(datas[i], model)
        except Exception as e:
            out[i] = e
    return out


def offsets(sizes: list[int]) -> list[tuple[int, int]]:
    bounds, start = [], 0
    for size in sizes:
        bounds.append((start, start + size))
        start += size
    return bounds


def split_rows(prediction: Any, sizes: list[int]) -> list[Any] | None:
    """Rows of an array (or list) prediction per input; None when its length is not the rows sent."""
    total = sum(sizes)
    if isinstance(prediction, np.ndarray):
        if prediction.ndim == 0 or prediction.shape[0] != total:
            return None
    elif isinstance(prediction, list):
        if len(prediction) != total:
            return None
    else:
        return None
    return [prediction[a:b] for a, b in offsets(sizes)]


def array_key(rows_1d: bool = False) -> Key:
    """Numeric numpy arrays group by trailing shape and dtype; with ``rows_1d`` a 1-D array is one row."""

    def key(data: Any) -> Hashable | None:
        if not isinstance(data, np.ndarray) or data.dtype == object:
            return None
        if data.ndim >= 2:
            return (data.shape[1:], data.dtype.str)
        if rows_1d and data.ndim == 1:
            return ((data.shape[0],), data.dtype.str)
        return None

    return key


def combine_arrays(parts: list[Any]) -> tuple[Any, list[int]]:
    rows = [p.reshape(1, -1) if p.ndim == 1 else p for p in parts]
    return np.concatenate(rows), [r.shape[0] for r in rows]


def array_batch(predict: Predict, rows_1d: bool = False) -> Callable[[list[Any], Any], list[Any]]:
    """``predict_batch`` for runtimes whose inputs are numpy arrays with one example per row."""
    key = array_key(rows_1d)

    def predict_batch(datas: list[Any], model: Any) -> list[Any]:
        return run_batched(datas, model, predict, key, combine_arrays, split_rows)

    return predict_batch
