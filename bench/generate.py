"""Generate large inventories for benchmarks: N tasks over M local machines in 10 teams."""

from __future__ import annotations

import json
import random
from pathlib import Path

TEAMS = 10


def generate(
    root: Path,
    tasks: int,
    machines: int,
    seed: int = 7,
    command: str = "true",
    plain: bool = False,
) -> Path:
    """Write `root/inventory` and return it. Deterministic for a seed.

    Each team owns machines/TEAMS machines with a `rack` label; most tasks target one machine,
    one in five selects a rack (about five machines), one in ten runs after the previous task
    of its team, and one in twenty is scheduled. So a pass plans more runs than tasks when a
    team has more than one rack (more than five machines per team).

    `plain`: every task targets exactly one machine (round-robin within its team), with no
    selector, `after` or schedule, and runs `command` as given (no task number appended): a
    pass plans exactly `tasks` runs, for benchmarks that compare run counts.
    """
    if plain and (tasks % TEAMS or machines % TEAMS or machines < TEAMS):
        raise ValueError(f"plain inventories need tasks and machines in multiples of {TEAMS}")
    rnd = random.Random(seed)
    inventory = root / "inventory"
    for folder in ("teams", "machines", "tasks"):
        (inventory / folder).mkdir(parents=True, exist_ok=True)
    # Ten teams share the reconciler's host through local machines: the settings must allow it.
    (inventory / "reconciler.yaml").write_text("local_machines: {allow_shared_user: true}\n")
    per_team = machines // TEAMS
    for t in range(TEAMS):
        team = f"team{t}"
        (inventory / "teams" / f"{team}.yaml").write_text(f"name: {team}\n")
        lines = ["machines:"]
        for m in range(per_team):
            lines.append(
                f"  - {{name: {team}-m{m}, team: {team}, transport: local, "
                f"labels: {{rack: r{m // 5}}}, max_parallel: 4}}"
            )
        (inventory / "machines" / f"{team}.yaml").write_text("\n".join(lines) + "\n")
        task_dir = inventory / "tasks" / team
        task_dir.mkdir(exist_ok=True)
        body = ["tasks:"]
        for i in range(tasks // TEAMS):
            if plain:
                body.append(
                    f"  - {{name: t{i}, machines: [{team}-m{i % per_team}], "
                    f"priority: {1 + i % 5}, command: {json.dumps(command)}}}"
                )
                continue
            if i % 5 == 4:
                target = f"selector: {{rack: r{rnd.randrange(max(1, per_team // 5))}}}"
            else:
                target = f"machines: [{team}-m{rnd.randrange(per_team)}]"
            extra = ""
            if i % 10 == 9:
                extra += f", after: [t{i - 1}]"
            if i % 20 == 7:
                extra += ", schedule: '*/15 * * * *'"
            body.append(
                f"  - {{name: t{i}, {target}, priority: {1 + i % 5}, "
                f"command: '{command} {i}'{extra}}}"
            )
        (task_dir / "tasks.yaml").write_text("\n".join(body) + "\n")
    return inventory
