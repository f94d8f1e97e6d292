"""The pre-0.2 home of `harness.api.errors`, kept so plugins written against it still import."""

from harness.api.errors import *  # noqa: F401,F403
