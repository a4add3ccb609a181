"""The consumers of the engine's event stream (`pipeline.events`), one job each.

- `audit.AuditConsumer`: the audit entries of events not written with their change
  (`Event.audited`), the pass's `pass.start` / `plan.recorded` / `pass.end`, the audit-failure
  state that refuses further dispatch, the engine's `Journal` (group commit) and the audited
  secret resolver of runs.
- `metrics.MetricsConsumer`: the only one touching the `Metrics` object: runs ended here,
  passes ended, and the failures the others report (audit entries, deliveries, alerts raised).
- `alerts.AlertConsumer`: `alerts.decide`, alerts remembered with their outbox rows, the
  courier, unreachable/reachable machines, refused commits; `alerts.AlertTargets` resolves
  outbox targets (vault reads audited).
- `logs.LogConsumer`: the structured log line of each event.

They do not know of each other: what one must tell another (an audit entry lost, an alert
raised) goes through a callback given at construction. `pipeline.sinks.build_sinks` wires
them and fans each event out to them in a fixed order (audit first).
"""
