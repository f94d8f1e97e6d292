"""The trained encoders a run keeps: each scored seed's weights, saved beside the working stores and loaded
back from the seed's record with one call.

    from harness.running.saved_encoders import load_encoder
    encoder = load_encoder("runs/records/synthetic/clip/seed0.json")   # workdir=".harness", as `harness run`'s
    features = encoder.encode(inputs)                                  # what the linear probe scored

After scoring a seed, `harness run` saves the method's whole state (`state_dict`: what `encode` reads, and the
heads and critics beside it) with what rebuilds it (the task, the method, the hyperparameters) and what ties
it to its record (the run identity, the seed, the MLflow run), in
`WORKDIR/encoders/TASK/METHOD/seedK-DIGEST.pt`, DIGEST being 12 hex digits of the identity, so a file is never
read for a record of another configuration. The same file is an artifact of the seed's MLflow run, under
`model/`; `load_encoder(record, weights=downloaded_file)` reads such a copy. Only tensors and plain data are
stored, read with `torch.load(weights_only=True)`, so loading one runs no code.

What a method builds in `prepare` from the training split (CLIP-guided SimCLR's guide) is saved but not
rebuilt: `encode` does not read it.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from harness.api.catalog import METHODS, TASKS
from harness.api.errors import HarnessError
from harness.api.method import Method
from harness.results.identity import differences, identity_digest, plain
from harness.results.records import Record, read_record, write_atomically

FORMAT = 1  # the file's layout; a reader refuses a newer one
FOLDER = "encoders"
ARTIFACT_PATH = "model"  # the folder of a seed's MLflow run that holds its copy
RERUN = "rerun the seed with `harness run ... --force` to save it again"


def encoder_path(workdir: Path, identity: dict[str, Any], seed: int) -> Path:
    """Where a seed of this identity keeps its trained encoder."""
    name = f"seed{seed}-{identity_digest(identity)}.pt"
    return Path(workdir) / FOLDER / identity["task"]["name"] / identity["method"]["name"] / name


def save_encoder(workdir: Path, method: Method, identity: dict[str, Any], seed: int, hparams: dict[str, Any],
                 mlflow_run_id: str | None) -> Path:
    """Write the seed's encoder file atomically (a reader sees the old file or the new one, never a part)."""
    path = encoder_path(workdir, identity, seed)
    payload = {
        "format": FORMAT, "identity": plain(identity), "seed": seed, "mlflow_run_id": mlflow_run_id,
        "task": {"name": method.task.name, "params": plain(method.task.params)},
        "method": method.name, "hparams": plain(hparams),
        "state": {key: value.detach().cpu() for key, value in method.state_dict().items()},
    }
    write_atomically(path, lambda tmp: torch.save(payload, tmp))
    return path


@dataclass
class TrainedEncoder:
    """A scored seed's trained method, rebuilt: `encode` gives the representation its linear probe scored."""

    method: Method  # the whole trained module (encoders, heads), in eval mode
    record: Record
    device: torch.device

    @torch.no_grad()
    def encode(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """As the probe read it: the modalities the method's probe declares, on its device, in eval mode."""
        probed = self.method.input_modalities(self.method.task).probe
        missing = sorted(set(probed) - set(inputs))
        if missing:
            raise HarnessError(f"encode: the inputs lack modality {', '.join(missing)}; give every modality of "
                               f"{', '.join(probed)}")
        return self.method.encode({name: inputs[name].to(self.device) for name in probed})


def load_encoder(record: str | Path, workdir: str | Path = ".harness", *, weights: str | Path | None = None,
                 device: str | torch.device = "cpu", data_dir: str | Path | None = None) -> TrainedEncoder:
    """The trained encoder of the seed a record scored, from the work folder it was trained in (or from
    `weights`, a copy of its file, from the seed's MLflow run say). One-line HarnessError when there is none,
    or when the file found was saved for another configuration or another training."""
    found = read_record(Path(record))
    if found.status != "ok" or found.seed is None:
        raise HarnessError(f"{record}: a '{found.status}' record has no trained encoder; give a seedK.json record")
    path = Path(weights) if weights is not None else encoder_path(Path(workdir), found.identity, found.seed)
    if not path.exists():
        raise HarnessError(f"{record}: no saved encoder at {path}; pass the work folder it was trained in "
                           f"(workdir=, `harness run --workdir`), or {RERUN}")
    payload = _read(path)
    _check_belongs(payload, found, record, path)
    device = torch.device(device)
    task = TASKS.get(payload["task"]["name"])(data_dir=data_dir, **payload["task"]["params"])
    method_cls = METHODS.get(payload["method"])
    here = {"task": task.version, "method": method_cls.version}
    problems = [f"{part} {found.identity[part]['name']} is version {here[part]} here, the encoder's is "
                f"{found.identity[part]['version']}" for part in here if here[part] != found.identity[part]["version"]]
    if plain(task.identity()["params"]) != found.identity["task"]["params"]:
        problems.append(f"task {task.name}'s parameters differ from the encoder's")
    if problems:  # the weights would not fit, or would be read as another architecture
        raise HarnessError(f"{record}: {'; '.join(problems)}; load it with the code that saved it")
    method = method_cls(task, payload["hparams"])
    result = method.load_state_dict(payload["state"], strict=False)
    if result.missing_keys:
        raise HarnessError(f"{path}: lacks weights {', '.join(result.missing_keys[:3])} that method "
                           f"{method.name} builds; {RERUN}")
    return TrainedEncoder(method.to(device).eval(), found, device)


def _read(path: Path) -> dict[str, Any]:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, EOFError, RuntimeError, pickle.UnpicklingError) as exc:
        raise HarnessError(f"{path}: cannot read this encoder file ({str(exc).splitlines()[0]}); {RERUN}") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("format"), int):
        raise HarnessError(f"{path}: not an encoder file written by `harness run`; {RERUN}")
    if payload["format"] > FORMAT:
        raise HarnessError(f"{path}: encoder file format {payload['format']} is newer than this harness reads "
                           f"({FORMAT}); upgrade the harness")
    return payload


def _check_belongs(payload: dict[str, Any], record: Record, record_path: str | Path, path: Path) -> None:
    """The file must be this record's: same identity and seed, and the same training (its MLflow run)."""
    fix = f"pass the work folder the record's seed was trained in, or {RERUN}"
    what = None
    if payload["seed"] != record.seed:
        what = f"saved for seed {payload['seed']}, the record's is {record.seed}"
    elif payload["identity"] != plain(record.identity):
        what = "; ".join(d.between("the encoder", "the record") for d in differences(payload["identity"],
                                                                                     record.identity))
        what = what or "another run identity"
    if what:
        raise HarnessError(f"{path}: the encoder is not {record_path}'s ({what}); {fix}")
    if payload["mlflow_run_id"] != record.mlflow_run_id:
        raise HarnessError(f"{path}: the encoder is another training of {record_path}'s configuration (MLflow run "
                           f"{payload['mlflow_run_id']}, the record's is {record.mlflow_run_id}); {fix}")
