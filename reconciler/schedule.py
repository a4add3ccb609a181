"""Pure time helpers over cron: due slots and deny windows (croniter; UTC only)."""
