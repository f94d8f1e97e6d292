"""Issue 24's GPU targets in one run (benchmarks/gpu_imagenet.sh starts it; under 4 minutes on an H200).

Writes an ImageNet-layout folder of 500x375 JPEGs, then measures: the task's loader at 1, 2 and all
allowed workers; nvjpeg (torchvision.io.decode_jpeg on the GPU) with torchvision's resize and crop,
and the hybrid decode's GPU half (tasks.common.jpeg_gpu, Pillow-exact resize); the harness's epoch
against the bare loop side by side; `fit` end to end from the files, decoding on the CPU workers
alone (`fit_from_files`) and with the hybrid decode (`fit_from_files_hybrid`, its share reached, and
`hybrid_vs_cpu`, the ratio of their last epochs); then, as time allows, the loader before issue 24,
fewer workers, a whole `harness run`, float32. Each measurement stands alone: one that fails prints
its error and the rest go on. Results: OUT/gpu_imagenet.json and a table on stdout.

BENCH_IMAGES, BENCH_DEVICE, BENCH_BATCH, BENCH_BUDGET_S make a tiny CPU rehearsal possible;
BENCH_FAKE_GPU_DECODE=1 puts a Pillow stand-in (tasks.common.jpeg_gpu.pillow_stand_in) where nvjpeg
would be, so the hybrid measurements run on a machine without a GPU (their rates then mean nothing).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import image_path  # noqa: E402
from harness.running.environment import available_cpus  # noqa: E402
from tasks.common.jpeg import default_workers  # noqa: E402
from tasks.common.jpeg_gpu import nvjpeg_decoder, pillow_stand_in  # noqa: E402

IMAGES = int(os.environ.get("BENCH_IMAGES", "4000"))
EPOCHS = int(os.environ.get("BENCH_EPOCHS", "3"))  # of each `fit` from files; the first includes the workers' start
BATCH = int(os.environ.get("BENCH_BATCH", "256"))
DEVICE = torch.device(os.environ.get("BENCH_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu"))
OUT = Path(os.environ.get("OUT") or tempfile.mkdtemp())
BUDGET_S = float(os.environ.get("BENCH_BUDGET_S", "200"))  # gpu_imagenet.sh stops it at 215 s
FAKE_GPU_DECODE = os.environ.get("BENCH_FAKE_GPU_DECODE") == "1"
ONLY = set(filter(None, os.environ.get("BENCH_ONLY", "").split(",")))  # names of the measurements to run; all if empty
STARTED = time.perf_counter()
results: dict = {"device": str(DEVICE), "allowed_cpus": available_cpus(), "images": IMAGES, "batch": BATCH}


def left() -> float:
    return BUDGET_S - (time.perf_counter() - STARTED)


def measure(name: str, run, needs_s: float = 0.0) -> None:
    if ONLY and name not in ONLY and name not in ("machine", "write_folder_s"):
        return
    if left() < needs_s:
        print(f"[{name}] skipped: {left():.0f} s left, needs {needs_s:.0f}", flush=True)
        results[name] = "skipped (time)"
        return
    started = time.perf_counter()
    try:
        results[name] = run()
    except Exception as exc:  # noqa: BLE001 - each measurement stands alone
        traceback.print_exc()
        results[name] = f"failed: {type(exc).__name__}: {exc}".splitlines()[0]
    print(f"[{name}] {time.perf_counter() - started:.1f} s: {results[name]}", flush=True)
    (OUT / "gpu_imagenet.json").write_text(json.dumps(results, indent=1))


def machine() -> dict:
    info = {"torch": torch.__version__, "python": sys.version.split()[0], "loadavg": open("/proc/loadavg").read()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    try:
        import torchvision
        info["torchvision"] = torchvision.__version__
    except Exception as exc:  # noqa: BLE001
        info["torchvision"] = f"unusable: {exc}"
    info["shm"] = subprocess.run(["df", "-h", "/dev/shm"], capture_output=True, text=True).stdout.split("\n")[-2]
    return info


def old_loader_first_batch(data_dir: Path, workers: int, cap_s: float) -> dict:
    """The loader before issue 24 (benchmarks/_old_imagenet.py, copied in by gpu_imagenet.sh): seconds to
    its first batch of 256 and to the end of a 1,024-image pass, in a child process killed at `cap_s`."""
    old = ROOT / "benchmarks" / "_old_imagenet.py"
    if not old.exists():
        return {"skipped": "no copy of the old loader"}
    code = (f"import sys, time, torch; sys.path.insert(0, {str(ROOT)!r}); sys.path.insert(0, {str(old.parent)!r})\n"
            "if __name__ == '__main__':\n"
            "    from _old_imagenet import ImageNet; from pathlib import Path\n"
            f"    d = ImageNet(Path({str(data_dir)!r}), workers={workers}, val_fraction=0.01).load().train.subset(1024)\n"
            "    t = time.perf_counter(); n = 0\n"
            "    for x, y, r in d.batches(256):\n"
            "        n += len(y); print('batch', n, round(time.perf_counter() - t, 2), flush=True)\n")
    started = time.perf_counter()
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=cap_s).stdout
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return {"workers": workers, "timed_out_s": cap_s, "batches_seen": out.strip().splitlines()}
    return {"workers": workers, "wall_s": round(time.perf_counter() - started, 1), "batches": out.strip().splitlines()}


def nvjpeg_rate(data_dir: Path, rows: int) -> dict:
    """torchvision's GPU decode, 256 files at a time, then per-image resize of the short side and centre crop."""
    import torchvision.transforms.v2.functional as TF
    from torchvision.io import decode_jpeg

    files = sorted((data_dir / "imagenet" / "train").rglob("*.JPEG"))[:rows]
    blobs = [torch.frombuffer(bytearray(f.read_bytes()), dtype=torch.uint8) for f in files]

    def run():
        out = []
        for start in range(0, len(blobs), 256):
            decoded = decode_jpeg(blobs[start : start + 256], device="cuda")
            out.append(torch.stack([TF.center_crop(TF.resize(img, 224, antialias=True), 224) for img in decoded]))
        torch.cuda.synchronize()
        return out

    run()
    started = time.perf_counter()
    run()
    return {"rows": len(blobs), "per_s": round(len(blobs) / (time.perf_counter() - started), 1),
            "note": "file bytes already in memory; decode + resize + crop on the GPU"}


def harness_run(data_dir: Path) -> dict:
    work = Path(tempfile.mkdtemp())
    command = [sys.executable, "-m", "harness.cli", "run", "--method", "simclr", "--task", "imagenet", "--trials", "1",
               "--seeds", "1", "--epochs", "1", "--data-dir", str(data_dir), "--results", str(work / "r"),
               "--workdir", str(work / "w"), "--allow-dirty", "--no-progress", "--set", f"batch_size={BATCH}"]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=max(30.0, left() - 15), cwd=ROOT)
    wall = time.perf_counter() - started
    records = list((work / "r").rglob("seed0.json"))
    record = json.loads(records[0].read_text()) if records else {}
    return {"rc": done.returncode, "wall_s": round(wall, 1), "stderr_tail": done.stderr.strip().splitlines()[-3:],
            "precision": (record.get("protocol") or {}).get("precision"),  # the record's, not its identity's
            "train_wall_s": record.get("wall_time_s"), "peak_memory": record.get("peak_memory_mb")}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    measure("machine", machine)
    data_dir = Path(tempfile.mkdtemp())
    measure("write_folder_s", lambda: _timed(lambda: image_path.write_imagenet_folder(
        data_dir, IMAGES, max(20, IMAGES // 20), processes=available_cpus())))
    all_workers = default_workers()
    results["default_workers"] = all_workers
    nvjpeg = nvjpeg_decoder()
    results["nvjpeg_available"] = nvjpeg is not None
    decoder = pillow_stand_in() if FAKE_GPU_DECODE else nvjpeg
    results["hybrid_decoder"] = decoder.name if decoder else None
    few = min(IMAGES, 1024)
    measure("loader_1_worker", lambda: image_path.loader_rate(data_dir, 1, few, BATCH))
    measure("loader_2_workers", lambda: image_path.loader_rate(data_dir, 2, few, BATCH))
    if all_workers > 2:
        measure(f"loader_{all_workers}_workers", lambda: image_path.loader_rate(data_dir, all_workers, IMAGES, BATCH))
    if available_cpus() not in (1, 2, all_workers):
        measure(f"loader_{available_cpus()}_workers",
                lambda: image_path.loader_rate(data_dir, available_cpus(), IMAGES, BATCH))
    if nvjpeg is not None:
        measure("nvjpeg", lambda: nvjpeg_rate(data_dir, min(IMAGES, 2048)), needs_s=20)
    if decoder is not None:
        measure("hybrid_gpu_half", lambda: image_path.gpu_path_rate(data_dir, min(IMAGES, 2048), decoder, BATCH),
                needs_s=15)
    rounds = 3 if DEVICE.type == "cuda" else 1
    step_images = 10 * BATCH if DEVICE.type == "cuda" else 2 * BATCH
    measure("step_bf16", lambda: image_path.harness_vs_bare(step_images, BATCH, DEVICE, DEVICE.type == "cuda", rounds),
            needs_s=30)
    measure("fit_from_files", lambda: image_path.epoch_from_files(data_dir, all_workers, BATCH, DEVICE,
                                                                  DEVICE.type == "cuda", EPOCHS), needs_s=30)
    if decoder is not None:
        # The share starts at 0.2 and moves 0.05 per 8 batches decoded at it: 4,000 images are 15 batches of 256
        # an epoch, so three epochs give the controller room to move; its decisions are in the record.
        measure("fit_from_files_hybrid", lambda: image_path.epoch_from_files(
            data_dir, all_workers, BATCH, DEVICE, DEVICE.type == "cuda", EPOCHS, gpu_decoder=decoder), needs_s=30)
        cpu, hybrid = results.get("fit_from_files"), results.get("fit_from_files_hybrid")
        if isinstance(cpu, dict) and isinstance(hybrid, dict):
            results["hybrid_vs_cpu"] = round(hybrid["per_s"][-1] / cpu["per_s"][-1], 3)  # the last epochs
            print(f"[hybrid_vs_cpu] {results['hybrid_vs_cpu']} (share reached {hybrid['share_reached']})", flush=True)
    measure("old_loader_14_workers", lambda: old_loader_first_batch(data_dir, 14, min(40.0, max(5.0, left() / 6))))
    measure("harness_run", lambda: harness_run(data_dir), needs_s=45)  # as a user runs it: hybrid where nvjpeg works
    fewer = max(1, all_workers - 3)  # leaves the training process more than one core: does it feed the GPU better?
    measure(f"fit_from_files_{fewer}_workers", lambda: image_path.epoch_from_files(
        data_dir, fewer, BATCH, DEVICE, DEVICE.type == "cuda"), needs_s=30)
    if DEVICE.type == "cuda":
        measure("step_float32", lambda: image_path.harness_vs_bare(step_images, BATCH, DEVICE, False, rounds),
                needs_s=40)
    print(json.dumps(results, indent=1))
    print(f"total {time.perf_counter() - STARTED:.0f} s")


def _timed(run) -> float:
    started = time.perf_counter()
    run()
    return round(time.perf_counter() - started, 1)


if __name__ == "__main__":
    main()
