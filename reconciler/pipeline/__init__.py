"""The run pipeline: the engine that plans, claims, executes and records runs; the sinks that
turn its events into audit entries, alerts and metrics; the daemon loop; key rotation."""
