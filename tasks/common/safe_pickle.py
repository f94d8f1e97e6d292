"""Unpickling downloaded data files without letting them run code.

A pickle is a program: it may name any importable callable and call it while
loading, so a doctored `mosi_data.pkl` could run a shell command. The public
files MultiBench distributes (the affect pickles, MIMIC's im.pk) hold only
dicts, lists, tuples, strings, numbers and numpy arrays; reading them needs
the handful of numpy functions that rebuild an array, its dtype and its
scalars, and nothing else. Every other name a pickle asks for is refused
before it is imported, so its code never runs.
"""

from __future__ import annotations

import importlib
import pickle
from types import ModuleType
from typing import IO, Any

import numpy

# What the public files need, by the (module, name) a pickle writes. numpy 1.x writes `numpy.core.*`,
# numpy 2.x `numpy._core.*`; both resolve to the installed numpy's own function.
NUMPY_TYPES = ("ndarray", "dtype")
NUMPY_CORE_PACKAGES = ("numpy.core", "numpy._core")
NUMPY_CORE_FUNCTIONS = {"multiarray": ("_reconstruct", "scalar"), "numeric": ("_frombuffer",)}
ADMITTED_KINDS = "dicts, lists, tuples, strings, numbers and numpy arrays"


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle names something the public files never hold: loading it could run arbitrary code."""

    def __init__(self, qualified_name: str):
        super().__init__(qualified_name)
        self.qualified_name = qualified_name


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only numpy's array-rebuilding names; every other global is refused before it is imported."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "numpy" and name in NUMPY_TYPES:
            return getattr(numpy, name)
        if (module, name) == ("_codecs", "encode"):  # Python 3 writes byte strings so at protocol 2
            return latin1_bytes
        package, _, submodule = module.rpartition(".")
        if package in NUMPY_CORE_PACKAGES and name in NUMPY_CORE_FUNCTIONS.get(submodule, ()):
            return getattr(_numpy_core(submodule), name)
        raise RefusedGlobal(f"{module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        raise RefusedGlobal(f"persistent id {str(pid)[:40]!r}")


def latin1_bytes(text: Any, encoding: Any = "latin1") -> bytes:
    """`_codecs.encode` as protocol 2 uses it, for latin-1 only: no other codec (zlib, say) gets to run."""
    if not isinstance(text, str) or str(encoding).lower().replace("-", "").replace("_", "") != "latin1":
        raise RefusedGlobal(f"_codecs.encode with encoding {str(encoding)[:20]!r}")
    return text.encode("latin1")


def _numpy_core(submodule: str) -> ModuleType:
    """The installed numpy's core submodule itself (`numpy._core.X` in numpy 2), not a deprecation shim."""
    for package in ("numpy._core", "numpy.core"):
        try:
            return importlib.import_module(f"{package}.{submodule}")
        except ImportError:
            continue
    raise ImportError(f"numpy has no core module {submodule}")


def load(handle: IO[bytes]) -> Any:
    """Unpickle from an open binary file; raises RefusedGlobal for anything that could run code.

    MultiBench's pickles may come from Python 2 era numpy; latin1 reads their byte strings either way.
    """
    return RestrictedUnpickler(handle, encoding="latin1").load()
