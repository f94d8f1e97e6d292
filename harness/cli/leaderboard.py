"""`harness leaderboard`: regenerate (or check) the published tables, figures and web page. Imports no torch."""

from __future__ import annotations

from pathlib import Path

from harness.api.errors import HarnessError
from harness.cli.encoder_facts import encoder_facts
from harness.results.claims import load_claims
from harness.results.publishing.claims_page import CLAIMS_MARKDOWN
from harness.results.publishing.site import publish


def leaderboard_command(root: Path, check: bool = False) -> int:
    stale = publish(Path(root), check=check, facts=encoder_facts)
    if check:
        if stale:
            raise HarnessError(f"{', '.join(stale)} out of date with the records; run `harness leaderboard` "
                               "and commit the results")
        print(f"{root}: leaderboard, claims, figures and web page are up to date")
        return 0
    claims = f", {Path(root) / CLAIMS_MARKDOWN}" if load_claims(Path(root)) else ""
    print(f"wrote {Path(root) / 'LEADERBOARD.md'}, {Path(root) / 'index.html'}{claims} and {Path(root) / 'figures'}/")
    return 0
