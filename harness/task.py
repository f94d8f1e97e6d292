"""The pre-0.2 home of `harness.api.task`, kept so plugins written against it still import."""

from harness.api.task import *  # noqa: F401,F403
