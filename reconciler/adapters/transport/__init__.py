"""Transports: how a command reaches a machine. `base.Transport` is the port."""
