"""The pre-0.2 home of `harness.api.registry`, kept so plugins written against it still import."""

from harness.api.registry import *  # noqa: F401,F403
