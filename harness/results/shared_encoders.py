"""Which cells of a leaderboard table hold the same trained encoders, and counts that take each encoder once.

A method that never reads labels trains one encoder on tasks that share their inputs (`Task.inputs_of`), so
its cells on those tasks probe the same encoders with different labels: one piece of evidence read several
ways, not independent replications. `results` is the leaderboard's tidy table, whose `encoder` column
names each record's trained encoder (harness.results.encoders.encoder_of). Imports no torch.
"""

from __future__ import annotations

import pandas as pd

SharedCells = dict[tuple[str, str], list[tuple[str, int, int]]]
WHY = ("a method that never reads labels trains one encoder for tasks that share their inputs (`Task.inputs_of`), "
       "so its cells on them probe the same encoders with each task's labels: one set of encoders, not "
       "independent replications")


def shared_cells(results: pd.DataFrame, tasks: list[str]) -> SharedCells:
    """(row, task) -> [(an earlier task of `tasks`, encoders in common, encoders of this cell)], for every cell
    that holds some of the trained encoders of the same row's cell on an earlier task."""
    found: SharedCells = {}
    for row, cells in _encoders_by_cell(results, tasks).items():
        for i, task in enumerate(cells):
            for earlier in list(cells)[:i]:
                common = cells[task] & cells[earlier]
                if common:
                    found.setdefault((row, task), []).append((earlier, len(common), len(cells[task])))
    return found


def _ok(results: pd.DataFrame) -> pd.DataFrame:
    return results[results.status == "ok"] if len(results) else results


def _encoders_by_cell(results: pd.DataFrame, tasks: list[str]) -> dict[str, dict[str, frozenset]]:
    """Row -> task -> the trained encoders of that cell's finished records, for the tasks (in their order)
    where the row has any."""
    ok = _ok(results)
    return {row: {task: frozenset(mine.encoder[mine.task == task]) for task in tasks if (mine.task == task).any()}
            for row, mine in ok.groupby("display", sort=True)}


def sharing_note(results: pd.DataFrame, tasks: list[str]) -> str | None:
    """The note under a table naming the cells that share encoders, and how many distinct encoders its records
    hold; None where no two cells share one."""
    said = []
    for row, cells in _encoders_by_cell(results, tasks).items():
        alike: dict[frozenset, list[str]] = {}
        for task, encoders in cells.items():
            alike.setdefault(encoders, []).append(task)
        said += [f"{row}: the same {len(encoders)} encoders on {_listed(on)}" for encoders, on in alike.items()
                 if len(on) > 1]
        for i, task in enumerate(cells):  # overlaps short of the same set, each said once
            for earlier in list(cells)[:i]:
                common = len(cells[task] & cells[earlier])
                if common and cells[task] != cells[earlier]:
                    said.append(f"{row}: {common} of its {len(cells[task])} encoders on {task} are those on {earlier}")
    if not said:
        return None
    ok = _ok(results)
    return (f"Note: shared encoders: {'; '.join(said)}. Why: {WHY}. This table's {len(ok)} records hold "
            f"{ok.encoder.nunique()} distinct encoders.")


def _listed(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def checks_note(results: pd.DataFrame, mark: str) -> str | None:
    """A failed check's `mark` counted once per encoder: on how many of the table's distinct encoders whose
    records carry checks one failed, beside the records' count; None where none failed or where every record
    is an encoder of its own (the marks then count encoders already)."""
    ok = results[(results.status == "ok") & results.checked]
    failed = ok[ok.check_failed]
    if failed.empty or (len(failed), len(ok)) == (failed.encoder.nunique(), ok.encoder.nunique()):
        return None
    return (f"Note: {mark} counted once per encoder: a check failed on {failed.encoder.nunique()} of the "
            f"{ok.encoder.nunique()} distinct encoders whose records carry checks ({len(failed)} of {len(ok)} "
            "records; an encoder counts as failed where any of its records failed).")
