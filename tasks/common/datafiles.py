"""Reading and validating downloaded data files, with one-line errors.

Every problem becomes a HarnessError of one line: the file, what is wrong with
it, and where to get the data. Loaders call these helpers instead of letting
numpy, pickle or Pillow raise their own multi-line tracebacks.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from harness.api.errors import HarnessError
from tasks.common import safe_pickle


class DataFiles:
    """The data files of one task: their root, and where to get them (for the error messages)."""

    def __init__(self, task_name: str, data_dir: Path | None, instructions: str):
        self.task_name = task_name
        self.data_dir = data_dir
        self.instructions = instructions

    def path(self, relative: str) -> Path:
        if self.data_dir is None:
            raise HarnessError(f"task {self.task_name}: no data directory given; pass --data-dir or set "
                               f"HARNESS_DATA_DIR. {self.instructions}")
        return self.data_dir / relative

    def fail(self, path: Path, problem: str) -> HarnessError:
        return HarnessError(f"{path}: {problem}. {self.instructions}")

    def existing(self, relative: str) -> Path:
        path = self.path(relative)
        if not path.exists():
            raise self.fail(path, "file not found")
        return path

    def read_pickle(self, relative: str) -> Any:
        """The file's content, through the restricted unpickler: a pickle that names code is refused unrun."""
        path = self.existing(relative)
        try:
            with path.open("rb") as handle:
                return safe_pickle.load(handle)
        except safe_pickle.RefusedGlobal as exc:
            raise self.fail(path, f"refused to load: the pickle asks for {exc.qualified_name}, which a data file "
                                  f"has no use for (the public files hold only {safe_pickle.ADMITTED_KINDS}) "
                                  f"and which could run code; delete it and download the file again") from None
        except Exception as exc:  # noqa: BLE001 - untrusted bytes make the unpickler and numpy raise any type
            cut_short = isinstance(exc, EOFError) or "truncated" in str(exc)
            reason = "truncated" if cut_short else f"{type(exc).__name__}: {_first_line(exc)}"
            raise self.fail(path, f"not a readable pickle ({reason}); download it again") from None

    def key(self, path: Path, mapping: Any, key: str, where: str = "") -> Any:
        """mapping[key], or an error naming the keys that are there."""
        if not isinstance(mapping, Mapping):
            raise self.fail(path, f"expected a dict{where}, found {type(mapping).__name__}")
        if key not in mapping:
            found = ", ".join(sorted(map(str, mapping))) or "none"
            raise self.fail(path, f"missing key '{key}'{where} (found: {found})")
        return mapping[key]

    def array(self, path: Path, value: Any, what: str, shape: Iterable[int | None] | None) -> np.ndarray:
        """`value` as a numeric array of the given shape (None: any); None in `shape` matches any length."""
        try:
            array = np.asarray(value)
        except (ValueError, TypeError):
            raise self.fail(path, f"{what} is not an array") from None
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
            raise self.fail(path, f"{what} has dtype {array.dtype}, expected numbers")
        if shape is None:
            return array
        expected = tuple(shape)
        if array.ndim != len(expected) or any(e is not None and e != a for e, a in zip(expected, array.shape)):
            pattern = "(" + ", ".join("N" if e is None else str(e) for e in expected) + ")"
            raise self.fail(path, f"{what} has shape {array.shape}, expected {pattern}")
        return array

    def label_set(self, path: Path, labels: np.ndarray, what: str, allowed: Iterable[float]) -> None:
        allowed = sorted(set(allowed))
        found = sorted(set(np.unique(labels).tolist()))
        extra = [v for v in found if v not in allowed]
        if extra:
            shown = ", ".join(f"{v:g}" for v in extra[:5])
            raise self.fail(path, f"{what} has values {shown} outside the expected set "
                                  f"{{{', '.join(f'{v:g}' for v in allowed)}}}")


def finite(array: np.ndarray) -> np.ndarray:
    """Non-finite entries set to 0, as MultiBench does (its audio features carry -inf)."""
    return np.nan_to_num(array.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)


def flat_labels(path: Path, files: DataFiles, labels: np.ndarray, rows: int, what: str) -> np.ndarray:
    """Labels stored as (N,), (N, 1) or (N, 1, 1) -> (N,)."""
    if labels.ndim == 0 or labels.shape[0] != rows or labels.size != rows:
        raise files.fail(path, f"{what} has shape {labels.shape}, expected ({rows},) or ({rows}, 1) or ({rows}, 1, 1)")
    return labels.reshape(rows)


def split_rows(n: int, fractions: tuple[float, float], seed: int) -> dict[str, np.ndarray]:
    """A fixed random permutation cut into val / test / train (val and test first, as MultiBench cuts)."""
    order = np.random.default_rng(seed).permutation(n)
    n_val, n_test = int(n * fractions[0]), int(n * fractions[1])
    return {"val": order[:n_val], "test": order[n_val:n_val + n_test], "train": order[n_val + n_test:]}


def multibench_split(n: int, seed: int = 10) -> dict[str, np.ndarray]:
    """MultiBench's MIMIC rows: `random.seed(10); random.shuffle(rows)`, then val [0, n//10), test
    [n//10, n//5), train [n//5, n). Shuffling indices with Python's generator moves them exactly as it
    moves MultiBench's list of rows, whatever the rows hold."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    rows = np.asarray(order, dtype=np.int64)
    return {"val": rows[:n // 10], "test": rows[n // 10:n // 5], "train": rows[n // 5:]}


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:200]
