"""`harness leaderboard`: regenerate (or check) the published tables, figures and web page. Imports no torch."""

from __future__ import annotations

from pathlib import Path

from harness.api.errors import HarnessError
from harness.results.publishing.site import publish


def leaderboard_command(root: Path, check: bool = False) -> int:
    stale = publish(Path(root), check=check)
    if check:
        if stale:
            raise HarnessError(f"{', '.join(stale)} out of date with the records; run `harness leaderboard "
                               f"--results {root}` (and commit them, if that folder is published)")
        print(f"{root}: leaderboard, figures and web page are up to date")
        return 0
    print(f"wrote {Path(root) / 'LEADERBOARD.md'}, {Path(root) / 'index.html'} and {Path(root) / 'figures'}/")
    return 0
