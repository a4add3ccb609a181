"""Who may change what: the pure rules behind git.verify and `reconcile codeowners`."""

from __future__ import annotations

import base64
import hashlib

from reconciler.core.codeowners import codeowners
from reconciler.core.model import Inventory, Member, Role, Team
from reconciler.core.trust import (
    ADMIN,
    OPERATOR,
    FileChange,
    key_fingerprint,
    memberships,
    requirements,
    unmet,
)

KEY = "ssh-ed25519 " + base64.b64encode(b"\x00\x00\x00\x0bssh-ed25519" + b"k" * 32).decode()
TRUSTED = Inventory(
    root="inventory",
    machines={},
    tasks={},
    teams={
        "prod": Team(
            "prod",
            members=(
                Member("alice", Role.ADMIN, ssh=KEY + " alice@laptop"),
                Member("bob", Role.OPERATOR),
                Member("carol", Role.VIEWER),
            ),
        )
    },
)


def _req(path, before=(), after=()):
    return [
        (r.team, r.roles)
        for r in requirements(FileChange(path, frozenset(before), frozenset(after)), TRUSTED)
    ]


def test_team_files_and_vaults_need_an_admin_of_that_team():
    assert _req("teams/prod.yaml", ["prod"], ["prod"]) == [("prod", ADMIN)]
    assert _req("vaults/prod.age") == [("prod", ADMIN)]


def test_a_new_team_needs_an_admin_of_any_team():
    assert _req("teams/new.yaml", after=["new"]) == [(None, ADMIN)]


def test_tasks_and_machines_need_an_operator_of_every_team_before_and_after():
    assert _req("tasks/prod/web.yaml", ["prod"], ["prod"]) == [("prod", OPERATOR)]
    assert _req("machines/m.yaml", ["prod"], ["dev"]) == [("dev", OPERATOR), ("prod", OPERATOR)]


def test_settings_and_files_naming_no_team_need_an_admin():
    assert _req("reconciler.yaml") == [(None, ADMIN)]
    assert _req("tasks/broken.yaml") == [(None, ADMIN)]
    assert _req("README.md") == [(None, ADMIN)]  # every path of the repository has an owner


def test_paths_setting_gives_folders_to_teams_and_the_last_match_wins():
    from dataclasses import replace

    from reconciler.core.model import Settings
    from reconciler.core.trust import owner_of, path_matches

    trusted = replace(
        TRUSTED, settings=Settings(paths=(("scripts/**", "prod"), ("scripts/ci/", "no-such-team")))
    )
    assert owner_of("scripts/prod/deep/x.sh", trusted).team == "prod"
    assert owner_of("scripts/ci/x.sh", trusted).team is None  # unknown team: an admin
    assert owner_of("ci/deploy.yml", trusted).team is None
    assert path_matches("tasks/*.sh", "tasks/a.sh") and not path_matches(
        "tasks/*.sh", "tasks/x/a.sh"
    )
    assert path_matches("**/d\u00e9ploy.sh", "a/b/d\u00e9ploy.sh")
    assert not path_matches("scripts/a.sh", "scripts/a.sh\n")


def test_unmet_requirements_by_role():
    needed = requirements(FileChange("tasks/prod/x.yaml", frozenset({"prod"})), TRUSTED)
    assert unmet(needed, {"prod": Role.OPERATOR}) == []
    assert unmet(needed, {"prod": Role.VIEWER}) == needed
    assert unmet(needed, {"dev": Role.ADMIN}) == needed


def test_fingerprint_is_sha256_of_the_key_blob_as_ssh_prints_it():
    blob = base64.b64decode(KEY.split()[1])
    expected = "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    assert key_fingerprint(KEY + " comment") == expected
    assert key_fingerprint("not a key") is None
    assert memberships(TRUSTED) == {expected: {"prod": Role.ADMIN}}


def test_codeowners_lists_admins_for_team_files_and_operators_for_tasks():
    text = codeowners(TRUSTED, {"inventory/teams/prod.yaml": frozenset({"prod"})}).text
    assert "/inventory/teams/prod.yaml @alice\n" in text
    assert "/inventory/vaults/prod.age @alice\n" in text
    assert "/inventory/tasks/prod/ @alice @bob\n" in text
    assert "@carol" not in text
