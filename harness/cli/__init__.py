"""The command line, on top of the other layers: `harness.cli.app` parses arguments into one typed
request per command (`harness.cli.requests`) and hands it to the command modules beside it."""

from harness.cli.app import main

__all__ = ["main"]
