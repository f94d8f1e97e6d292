"""`harness leaderboard`: regenerate (or check) the published tables, figures and web page. Imports no torch."""

from __future__ import annotations

from pathlib import Path

from harness.api.errors import HarnessError
from harness.cli.encoder_facts import encoder_facts
from harness.results.claims import load_claims
from harness.results.publishing.claims_page import CLAIMS_MARKDOWN
from harness.results.publishing.pages import PAGES_DIR
from harness.results.publishing.site import publish


def leaderboard_command(root: Path, check: bool = False, overlays: list[Path] | None = None) -> int:
    overlays = list(overlays or [])
    if check and overlays:
        # What is committed is drawn from one folder's records; an overlay is a private view, never published.
        raise HarnessError("--check compares a folder's committed outputs with its own records and takes no --with; "
                           f"run `harness leaderboard --results {root} --check` alone")
    stale = publish(Path(root), check=check, overlays=overlays, facts=encoder_facts)
    if check:
        if stale:
            raise HarnessError(f"{', '.join(stale)} out of date with the records; run `harness leaderboard "
                               f"--results {root}` (and commit them, if that folder is published)")
        print(f"{root}: leaderboard, claims, pages, figures and web page are up to date")
        return 0
    written = f", {Path(root) / CLAIMS_MARKDOWN}" if load_claims(Path(root)) else ""
    written += "".join(f", {Path(root) / p.name}" for p in sorted((Path(root) / PAGES_DIR).glob("*.md")))
    shown = f", beside {', '.join(f'{p}/records/' for p in overlays)} (read only)" if overlays else ""
    print(f"wrote {Path(root) / 'LEADERBOARD.md'}, {Path(root) / 'index.html'}{written} and "
          f"{Path(root) / 'figures'}/{shown}")
    return 0
