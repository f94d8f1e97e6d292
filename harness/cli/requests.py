"""What each training command asks for, typed once at the command line's boundary.

`harness.cli.app` turns the parsed arguments into one of these; the commands and everything below
them read these fields, never an argparse namespace. Imports no torch: a fully recorded `harness run`
is answered from a RunRequest without it.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from harness.api.space import parse_overrides
from harness.running.request import RunOptions


@dataclass
class RunRequest(RunOptions):
    """`harness run`: the cross product of methods and tasks under one protocol; how each pair runs is the
    RunOptions part, the rest is what the command alone needs."""

    methods: tuple[str, ...] = ()
    tasks: tuple[str, ...] = ()
    results: Path = Path("runs")  # a user's own runs, not the published results/
    allow_dirty: bool = False
    tracking_uri: str | None = None
    storage: str | None = None
    workers: int = 1
    devices: tuple[str, ...] = ()  # --devices: worker i trains on devices[i % len]; empty: --device decides
    nproc: int = 1  # ranks this command starts through torchrun's launcher (`--nproc`)

    @classmethod
    def from_args(cls, args: argparse.Namespace, data_dir: Path | None) -> RunRequest:
        # torchrun tells each rank how many there are (WORLD_SIZE); read here without torch, which a fully
        # recorded run never loads.
        started_among = int(os.environ.get("WORLD_SIZE", "1") or 1)
        devices = tuple(args.devices or ())
        # A list of devices asks for a worker on each, unless --workers says how many.
        workers = args.workers or len(devices) or 1
        return cls(methods=tuple(args.method), tasks=tuple(args.task), trials=args.trials, seeds=args.seeds,
                   epochs=args.epochs, device=args.device, overrides=parse_overrides(args.overrides),
                   force=args.force, keep_old=args.keep_old, allow_dirty=args.allow_dirty, bf16=args.bf16,
                   results=args.results, workdir=args.workdir, data_dir=data_dir, tracking_uri=args.tracking_uri,
                   storage=args.storage, workers=workers, devices=devices, progress=not args.no_progress,
                   nproc=args.nproc, world_size=args.nproc if args.nproc > 1 else started_among,
                   threads=args.threads)

    @property
    def launches(self) -> bool:
        """This process starts the ranks (`--nproc N`) instead of training."""
        return self.nproc > 1 and "WORLD_SIZE" not in os.environ

    def options(self) -> RunOptions:
        """The RunOptions part; one process trains on the first of --devices."""
        shared = {f.name: getattr(self, f.name) for f in fields(RunOptions)}
        return RunOptions(**shared | {"device": self.devices[0] if self.devices else self.device,
                                      "overrides": dict(self.overrides)})


@dataclass(frozen=True)
class DiagnoseRequest:
    """`harness diagnose`: retrain as a seed's record did, then estimate MI with the task's latents."""

    methods: tuple[str, ...]
    tasks: tuple[str, ...]
    seed: int = 0
    epochs: int | None = None
    overrides: dict[str, str] = field(default_factory=dict)
    reference: Path | None = None
    device: str = "auto"
    results: Path = Path("runs")  # as every command: results/ only when asked
    workdir: Path = Path(".harness")
    data_dir: Path | None = None
    tracking_uri: str | None = None
    progress: bool = True

    @classmethod
    def from_args(cls, args: argparse.Namespace, data_dir: Path | None) -> DiagnoseRequest:
        return cls(methods=tuple(args.method), tasks=tuple(args.task), seed=args.seed, epochs=args.epochs,
                   overrides=parse_overrides(args.overrides), reference=args.reference, device=args.device,
                   results=args.results, workdir=args.workdir, data_dir=data_dir, tracking_uri=args.tracking_uri,
                   progress=not args.no_progress)

    def options(self) -> RunOptions:
        return RunOptions(seeds=1, epochs=self.epochs, device=self.device, overrides=dict(self.overrides),
                          results=self.results, workdir=self.workdir, data_dir=self.data_dir, progress=self.progress)


@dataclass(frozen=True)
class ReproduceRequest:
    """`harness reproduce`: rerun one record's configuration and compare."""

    record: Path
    force: bool = False
    device: str = "auto"
    workdir: Path = Path(".harness")
    data_dir: Path | None = None
    tracking_uri: str | None = None
    progress: bool = True

    @classmethod
    def from_args(cls, args: argparse.Namespace, data_dir: Path | None) -> ReproduceRequest:
        return cls(record=args.record, force=args.force, device=args.device, workdir=args.workdir,
                   data_dir=data_dir, tracking_uri=args.tracking_uri, progress=not args.no_progress)

    def options(self) -> RunOptions:
        return RunOptions(seeds=1, device=self.device, workdir=self.workdir, data_dir=self.data_dir,
                          progress=self.progress)
