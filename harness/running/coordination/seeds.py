"""Seed claims: one study attribute per seed, so every change to a claim is one atomic write.

A claim is running (with its holder's lease, or none once its holder gave it back), ok (with its record
and curve), diverged, or failed. A seed handed back after a lost process carries the death at once; one
whose lease ran out gets it when the next worker takes it over; a preempted seed gets none.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import optuna

SEED_PREFIX = "harness:seed:"


def seed_key(seed: int) -> str:
    return f"{SEED_PREFIX}{seed}"


def seed_claim(study: optuna.Study, seed: int) -> dict[str, Any] | None:
    return study._storage.get_study_system_attrs(study._study_id).get(seed_key(seed))


def deaths_so_far(claim: dict[str, Any]) -> int:
    """A running claim being taken over: its deaths, plus one if its holder vanished without handing it back."""
    return claim.get("deaths", 0) + (claim["lease"] is not None)


def settled_records(storage: optuna.storages.BaseStorage) -> Iterator[dict[str, Any]]:
    """Every record a worker settled in this storage's studies (the newest of each seed's claim)."""
    for study in storage.get_all_studies():
        for key, claim in storage.get_study_system_attrs(study._study_id).items():
            if key.startswith(SEED_PREFIX) and claim.get("state") == "ok" and claim.get("record"):
                yield claim["record"]
