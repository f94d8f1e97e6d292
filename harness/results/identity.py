"""A run's identity: everything that must be equal for a recorded result to stand for a requested run.

The identity is computed here and nowhere else, from plain dicts (this module
imports no torch), so a command can decide what to train without loading data:

- task: name, version, parameters and the fingerprint of the data it loads;
- method: name and version;
- for a method or task from outside the harness (a plugin), `code`: a digest of its package's code
  (harness.running.provenance), so an edit made without a new version is never taken for the code a
  record was made with; the harness's own methods and tasks leave it out, and keep the identities
  their records always had;
- protocol: epochs, trial budget, number of seeds, batch size (the global batch: all ranks'
  rows together) and, for a data-parallel run, how many ranks trained it;
- fixed: every hyperparameter not tuned, whether a default or given with --set.

Every record stores its identity. A seed's record is reused only when its
identity equals the requested one (`differences` is empty). The Optuna study
is named by the identity without its seeds and trial budget (`study_name`):
how many seeds are retrained does not change a study, and a study's first N
trials are what a budget of N would have run, so the tuner reads only those
(see `harness.running.tuning.best_params`).

A record written before identities were stored (schema 1) has `fixed` None:
it never said which values were fixed and which tuned. Such a record matches a
request when every value the request fixes equals the value it recorded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

PROTOCOL_KEYS = ("epochs", "trials", "seeds", "batch_size")
# Kept in an identity only when it differs from this: a one-process run keeps the identity (and the study
# name) it always had, and a data-parallel run's identity says how many ranks trained it.
WORLD_SIZE, ONE_PROCESS = "world_size", 1

# How each part of an identity reads in a sentence; "{}" is the value.
_PHRASES = {
    ("task", "name"): "task {}", ("task", "version"): "task version {}",
    ("task", "fingerprint"): "data fingerprint {}",
    ("task", "code"): "task code {}",
    ("method", "name"): "method {}", ("method", "version"): "method version {}", ("method", "code"): "method code {}",
    ("protocol", "epochs"): "{} epochs", ("protocol", "trials"): "{} trials",
    ("protocol", "seeds"): "{} seeds", ("protocol", "batch_size"): "batch size {}",
    ("protocol", WORLD_SIZE): "{} rank(s)",
}
_ABSENT = {("protocol", WORLD_SIZE): ONE_PROCESS}  # what a key an identity leaves out stands for (else None)
CODE = "code"



def task_setting(task: Mapping[str, Any]) -> str:
    """A record's task version and parameters as one string: two seeds of one task pair only where it is equal
    (the same seed numbers on another version or setting are other data)."""
    return json.dumps({"version": task.get("version"), "params": task.get("params")}, sort_keys=True, default=str)


def plain(value: Any) -> Any:
    """The value as JSON stores it (tuples become lists, dataclasses dicts), so recorded and requested compare."""
    def default(obj: Any) -> Any:
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            return dataclasses.asdict(obj)
        raise TypeError(f"cannot store {type(obj).__name__} in a run identity: {obj!r}")

    return json.loads(json.dumps(value, sort_keys=True, default=default))


def run_identity(task: Mapping[str, Any], method: Mapping[str, Any], protocol: Mapping[str, Any],
                 fixed: Mapping[str, Any] | None) -> dict[str, Any]:
    """The identity of a run; extra keys in the inputs (a task's suite, a method's display name) are left out."""
    ranks = protocol.get(WORLD_SIZE) or ONE_PROCESS
    return plain({
        "task": {"name": task["name"], "version": task.get("version"), "params": task.get("params") or {},
                 "fingerprint": task.get("fingerprint")} | _code(task),
        "method": {"name": method["name"], "version": method.get("version")} | _code(method),
        "protocol": {key: protocol.get(key) for key in PROTOCOL_KEYS}
                    | ({WORLD_SIZE: ranks} if ranks != ONE_PROCESS else {}),
        "fixed": None if fixed is None else dict(fixed),
    })


def _code(part: Mapping[str, Any]) -> dict[str, Any]:
    """A plugin's code digest; nothing for the harness's own code, so its identities stay what they were."""
    return {CODE: part[CODE]} if part.get(CODE) is not None else {}


@dataclass(frozen=True)
class Difference:
    """One way two identities differ: `phrase` reads "{} epochs", "lr={}" or "task parameter n={}"."""

    phrase: str
    recorded: Any
    requested: Any
    why: str = ""  # said in brackets after the difference

    def __str__(self) -> str:
        """As the resume decision says it: "recorded with 6 epochs, asked for 1"."""
        asked = _show(self.requested) if self.phrase.startswith("{}") else self._says(self.requested)
        return f"recorded with {self._says(self.recorded)}, asked for {asked}{self._why()}"

    def between(self, recorded_in: str, requested_in: str) -> str:
        """As the leaderboard says it: "seed2.json has 1 epochs, seed0.json 6 epochs"."""
        said = f"{recorded_in} has {self._says(self.recorded)}, {requested_in} {self._says(self.requested)}"
        return said + self._why()

    def _why(self) -> str:
        return f" ({self.why})" if self.why else ""

    def _says(self, value: Any) -> str:
        if value is _TUNED:
            return f"{self.phrase.split('=')[0]} tuned"
        return self.phrase.format(_show(value))


_TUNED = object()  # a hyperparameter one side tunes and the other fixes


def differences(recorded: Mapping[str, Any], requested: Mapping[str, Any],
                recorded_hparams: Mapping[str, Any] | None = None) -> list[Difference]:
    """How a recorded identity differs from the requested one; empty when the record stands for the request.

    `recorded_hparams` (the record's hyperparameters) is read only when the recorded identity
    predates fixed values being stored (`fixed` None, see the module's docstring).
    """
    found = []
    for (part, key), phrase in _PHRASES.items():
        absent = _ABSENT.get((part, key))
        a = (recorded.get(part) or {}).get(key, absent)
        b = (requested.get(part) or {}).get(key, absent)
        if a != b:
            found.append(Difference(phrase, a, b, _why_code(part, recorded, requested) if key == CODE else ""))
    a_params = _flat((recorded.get("task") or {}).get("params") or {})
    b_params = _flat((requested.get("task") or {}).get("params") or {})
    for key in sorted(set(a_params) | set(b_params)):
        if a_params.get(key) != b_params.get(key):
            found.append(Difference(f"task parameter {key}={{}}", a_params.get(key), b_params.get(key)))
    found += _fixed_differences(recorded.get("fixed"), requested.get("fixed") or {}, recorded_hparams or {})
    return found


def _why_code(part: str, recorded: Mapping[str, Any], requested: Mapping[str, Any]) -> str:
    """Why a plugin's code digests differ, where the phrase alone would leave a reader guessing."""
    if (recorded.get(part) or {}).get(CODE) is None:
        return "the record names no code: it was made before a plugin's code was part of its identity"
    if (recorded.get(part) or {}).get("version") == (requested.get(part) or {}).get("version"):
        return "its code changed, its version did not: bump the version when an edit changes results"
    return ""


def _fixed_differences(recorded: Mapping[str, Any] | None, requested: Mapping[str, Any],
                       recorded_hparams: Mapping[str, Any]) -> list[Difference]:
    if recorded is None:  # schema 1: only the values recorded can be compared; a key it lacks did not exist then
        return [Difference(f"{key}={{}}", recorded_hparams[key], value) for key, value in sorted(requested.items())
                if key in recorded_hparams and plain(recorded_hparams[key]) != value]
    found = []
    for key in sorted(set(recorded) | set(requested)):
        a, b = recorded.get(key, _TUNED), requested.get(key, _TUNED)
        if a != b:
            found.append(Difference(f"{key}={{}}", a, b))
    return found


def summary(found: list[Difference]) -> str:
    return "; ".join(str(d) for d in found)


def identity_digest(value: Mapping[str, Any]) -> str:
    """12 hex digits of a sha256 over the value as JSON stores it: names a study, a kept encoder, a checkpoint."""
    return hashlib.sha256(json.dumps(plain(value), sort_keys=True).encode()).hexdigest()[:12]


def study_name(identity: Mapping[str, Any]) -> str:
    """The Optuna study for this identity's search: readable, then a digest of all that shapes the search."""
    key = {**identity, "protocol": {k: v for k, v in identity["protocol"].items() if k not in ("seeds", "trials")}}
    digest = identity_digest(key)
    task, method = identity["task"], identity["method"]
    return (f"{task['name']}@{task['version']}/{method['name']}@{method['version']}"
            f"/e{identity['protocol']['epochs']}/{digest}")


def _flat(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, Mapping):
            flat |= _flat(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if value is None:
        return "none"
    return str(value)
