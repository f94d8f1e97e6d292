"""Records and what is published from them: identity, records, fingerprints, statistics, the
leaderboard, diagnostics and the publishing of figures and the web page. Imports the interface
(`harness.api`) and nothing that runs training (`harness.running`, `harness.cli`)."""
