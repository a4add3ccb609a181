"""The pure core: the model, planning, dispatch decisions, schedules, alert policy, redaction
and diffs. No I/O, no clock, no environment: every function takes what it needs (the time
included) and returns a value. `tests/unit/test_layers.py` keeps it so."""
