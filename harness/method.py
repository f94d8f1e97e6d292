"""The pre-0.2 home of `harness.api.method`, kept so plugins written against it still import."""

from harness.api.method import *  # noqa: F401,F403
