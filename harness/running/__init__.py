"""Running a (task, method) pair: request resolution, resume, the training loop, the probe, tuning,
tracking, coordination of a sweep's workers. Imports `harness.api` and `harness.results`, never the
command line."""
