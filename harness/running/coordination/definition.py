"""The sweep's definition (trials, seeds, epochs, fixed values) and the workers running it, kept in the
study: a worker asking for another definition while live workers run it is refused in one line."""

from __future__ import annotations

from typing import Any

import optuna

from harness.api.errors import HarnessError
from harness.running.coordination.leases import Holder, lease_expired, new_lease

DEFINITION_KEY = "harness:definition"


def join(study: optuna.Study, holder: Holder, definition: dict[str, Any]) -> None:
    """Add `holder` to the study's members under `definition` (the caller holds the mutex)."""
    current = study._storage.get_study_system_attrs(study._study_id).get(DEFINITION_KEY) or {}
    members = {who: lease for who, lease in (current.get("members") or {}).items()
               if who != holder.id and not lease_expired(lease)}
    if members and current.get("definition") != definition:
        raise HarnessError(_refusal(study.study_name, current["definition"], definition, members))
    members[holder.id] = new_lease(holder)
    study._storage.set_study_system_attr(study._study_id, DEFINITION_KEY,
                                         {"definition": definition, "members": members})


def leave(study: optuna.Study, holder: Holder) -> None:
    current = study._storage.get_study_system_attrs(study._study_id).get(DEFINITION_KEY)
    if current and holder.id in current.get("members", {}):
        members = {k: v for k, v in current["members"].items() if k != holder.id}
        study._storage.set_study_system_attr(study._study_id, DEFINITION_KEY, current | {"members": members})


def renew_membership(study: optuna.Study, holder: Holder) -> None:
    current = study._storage.get_study_system_attrs(study._study_id).get(DEFINITION_KEY)
    if current and holder.id in current.get("members", {}):
        members = current["members"] | {holder.id: new_lease(holder)}
        study._storage.set_study_system_attr(study._study_id, DEFINITION_KEY, current | {"members": members})


def _refusal(study: str, running: dict[str, Any], asked: dict[str, Any], members: dict[str, Any]) -> str:
    def says(definition: dict[str, Any]) -> str:
        fixed = ", ".join(f"{k}={v}" for k, v in sorted((definition.get("fixed") or {}).items()))
        return (f"{definition.get('trials')} trials, {definition.get('seeds')} seeds, {definition.get('epochs')} "
                f"epochs" + (f", fixed {fixed}" if fixed else ""))

    who = ", ".join(sorted(":".join(m.split(":")[:2]) for m in members))
    return (f"study {study} is being run by {len(members)} worker(s) ({who}) with {says(running)}; this command "
            f"asks for {says(asked)}: join it with the same --trials, --seeds, --epochs and --set, or run yours "
            f"once it is done")
