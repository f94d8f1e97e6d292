"""Benchmarks share a 2-core CPU with other work. libgomp's worker threads spin while they
wait by default; when another process holds a core, a spinning torch thread burns the time
slice its partner needs, and a FactorCL epoch with two threads ran past 180 s instead of about
40 s. Passive waiting removes that. It must be set before torch is first imported; an
explicit OMP_WAIT_POLICY in the environment still wins."""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
