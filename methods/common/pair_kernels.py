"""The CPU pair kernels of `pair_kernels.c`, built once per machine with the system C compiler, loaded with ctypes.

`NATIVE.forward(ha, hb, w)` is out[i, j] = sum_h w_h relu(ha[i, h] + hb[j, h]); `NATIVE.backward` its
gradients. The library is built for the CPU it runs on (-march=native) and kept in the machine cache
(`harness.running.workdir.cache_dir()`), named by a hash of the source, the compiler command and the CPU, so a
changed source, compiler or machine builds anew; a build takes well under a second. $CC names the
compiler (default `cc`); without OpenMP (Apple's clang) the kernels build single-threaded.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from harness.running.workdir import CACHE_ENV, cache_dir

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_suffix(".c")
BASE_FLAGS = ("-O3", "-march=native", "-shared", "-fPIC")
THREADED = ("-fopenmp",)
_INDEX, _POINTER, _INT = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int


class KernelBuildError(RuntimeError):
    """No library: the compiler is missing or refused the source."""


def _cpu_identity() -> str:
    """What -march=native compiles for: the processor's model and feature flags, where Linux says them."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    return "\n".join(dict.fromkeys(line for line in lines if line.startswith(("model name", "flags", "Features"))))


def _round_up(n: int, step: int) -> int:
    return -(-n // step) * step


def _padded(x: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """x with zero rows and columns up to rows x cols (zeros add nothing to any score or gradient)."""
    if x.shape == (rows, cols):
        return x.contiguous()
    return F.pad(x, (0, cols - x.shape[1], 0, rows - x.shape[0]))


class NativePairKernels:
    """The fused pair kernels for float32 CPU tensors: `ready`, then `forward` and `backward`."""

    def __init__(self) -> None:
        self.library: ctypes.CDLL | None = None
        self.available: bool | None = None  # None: not tried yet in this process

    def ready(self, ha: torch.Tensor, hb: torch.Tensor, w: torch.Tensor) -> bool:
        """Whether these operands run here (float32 on the CPU). The library is loaded, built if need be, on
        first use; after a failure, one warning and False from then on."""
        if ha.device.type != "cpu" or ha.dtype != torch.float32:
            return False
        if self.available is None:
            try:
                self.library = self._load()
                self.available = True
            except KernelBuildError as exc:
                self.available = False
                log.warning("native pair critic kernels unavailable (%s); critics run in eager form", exc)
        return self.available

    def _load(self) -> ctypes.CDLL:
        compiler = os.environ.get("CC", "cc")
        source, cpu = SOURCE.read_bytes(), _cpu_identity().encode()
        for flags in (BASE_FLAGS + THREADED, BASE_FLAGS):
            named = b"\0".join([source, compiler.encode(), " ".join(flags).encode(), cpu])
            key = hashlib.sha256(named).hexdigest()[:16]
            path = cache_dir() / "kernels" / f"pair_kernels-{key}.so"
            if not path.exists():
                try:
                    self._build(compiler, flags, path)
                except KernelBuildError as exc:
                    failure = exc
                    continue
            try:
                library = ctypes.CDLL(str(path))
            except OSError as exc:
                raise KernelBuildError(f"cannot load {path}: {exc}; delete it to rebuild") from None
            library.pair_forward.argtypes = [_POINTER] * 4 + [_INDEX] * 3 + [_INT]
            library.pair_backward.argtypes = [_POINTER] * 7 + [_INDEX] * 3 + [_INT]
            self.lanes, self.tile = library.pair_kernel_lanes(), library.pair_kernel_tile()
            return library
        raise failure

    @staticmethod
    def _build(compiler: str, flags: tuple[str, ...], path: Path) -> None:
        started = time.perf_counter()
        partial = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Built beside its final name and moved there whole: workers building at once never load half a file.
            with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".so", delete=False) as file:
                partial = Path(file.name)
            done = subprocess.run([compiler, *flags, "-o", str(partial), str(SOURCE)], capture_output=True, text=True)
            if done.returncode != 0:
                first = (done.stderr.strip().splitlines() or ["no message"])[0]
                raise KernelBuildError(f"{compiler} failed to build {SOURCE.name}: {first}")
            os.replace(partial, path)
        except OSError as exc:
            what = f"the C compiler {compiler!r}" if exc.filename in (compiler, None) else exc.filename
            raise KernelBuildError(f"cannot use {what}: {exc.strerror}; set $CC or ${CACHE_ENV}") from None
        finally:
            if partial is not None and partial.exists():
                partial.unlink()
        log.info("native pair critic kernels built in %.1f s (once per machine): %s",
                 time.perf_counter() - started, path)

    def _whole_tiles(self, ha: torch.Tensor, hb: torch.Tensor, w: torch.Tensor):
        """The operands zero-padded to the kernels' whole tiles, and the padded sizes (rows_a, rows_b, width)."""
        sizes = _round_up(ha.shape[0], self.tile), _round_up(hb.shape[0], self.tile), _round_up(ha.shape[1], self.lanes)
        rows_a, rows_b, width = sizes
        return (_padded(ha, rows_a, width), _padded(hb, rows_b, width), _padded(w[None], 1, width)), sizes

    def forward(self, ha: torch.Tensor, hb: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        (ha_, hb_, w_), (rows_a, rows_b, width) = self._whole_tiles(ha, hb, w)
        out = ha_.new_empty(rows_a, rows_b)
        self.library.pair_forward(ha_.data_ptr(), hb_.data_ptr(), w_.data_ptr(), out.data_ptr(), rows_a, rows_b, width,
                                  torch.get_num_threads())
        return out[: ha.shape[0], : hb.shape[0]]

    def backward(self, ha: torch.Tensor, hb: torch.Tensor, w: torch.Tensor, grad: torch.Tensor, needs_w: bool):
        (ha_, hb_, w_), (rows_a, rows_b, width) = self._whole_tiles(ha, hb, w)
        grad = _padded(grad, rows_a, rows_b)
        grad_a, grad_b = torch.empty_like(ha_), torch.empty_like(hb_)
        grad_w = w_.new_empty(width) if needs_w else None
        self.library.pair_backward(ha_.data_ptr(), hb_.data_ptr(), w_.data_ptr(), grad.data_ptr(), grad_a.data_ptr(),
                                   grad_b.data_ptr(), grad_w.data_ptr() if needs_w else None, rows_a, rows_b, width,
                                   torch.get_num_threads())
        (na, hidden), nb = ha.shape, hb.shape[0]
        return grad_a[:na, :hidden], grad_b[:nb, :hidden], grad_w[:hidden] if needs_w else None


NATIVE = NativePairKernels()
