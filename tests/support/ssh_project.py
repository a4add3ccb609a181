"""A scratch project whose machine is reached over real SSH, for `reconcile` subprocess tests.

`ssh_project(root, port, host_key, client_key)` writes team `ops` (one admin with an age
identity at `project.key`), the team vault holding the machine's private key (`SSH_KEY`) and
any `secrets`, and machine `box` (`transport: ssh` on 127.0.0.1:`port`, `host_key` pinned,
`key: {vault: SSH_KEY}`). `alerts` are the team's alert URLs; `settings` is the text of
`reconciler.yaml`. The task commands run on the target as the test user.
"""

from __future__ import annotations

import getpass
from pathlib import Path

from tests.support.project import Project


def ssh_project(
    root: Path,
    port: int,
    host_key: str,
    client_key,
    *,
    alerts=(),
    settings: str = "",
    secrets: dict[str, str] | None = None,
    max_parallel: int = 4,
) -> Project:
    project = Project(root)
    key = project.root / "me.key"
    public = project.run("vault", "keygen", "-o", str(key), code=0).err.split("Public key: ")[1]
    alert_lines = "".join(f"  - {url}\n" for url in alerts)
    project.write(
        "teams/ops.yaml",
        f"name: ops\nmembers:\n  - {{name: me, role: admin, "
        f"age: {public.strip()}}}\n" + (f"alerts:\n{alert_lines}" if alerts else ""),
    )
    for name, value in {"SSH_KEY": client_key.private, **(secrets or {})}.items():
        project.run("vault", "set", "ops", name, "-", "--identity", str(key), code=0, input=value)
    project.write(
        "machines/box.yaml",
        f"name: box\nteam: ops\nhost: 127.0.0.1\nport: {port}\n"
        f"user: {getpass.getuser()}\nhost_key: {host_key}\nkey: {{vault: SSH_KEY}}\n"
        f"max_parallel: {max_parallel}\n",
    )
    if settings:
        project.write("reconciler.yaml", settings)
    project.key = key
    return project


__all__ = ["ssh_project"]
