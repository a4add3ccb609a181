"""Vaults: age-encrypted team secrets (`age/` is the file format, `team_vault` the team files)."""
