"""Hardcoded-credential lint: warnings located at the value, never echoing it."""

import pytest

from reconciler.core.diagnostics import Location, Severity
from reconciler.core.model import AlertTarget, Inventory, Settings, Task, Team, VaultRef
from reconciler.inventory.lint import (
    credential_kinds,
    find_hardcoded_credentials,
    looks_like_secret_name,
)
from reconciler.inventory.loader import load_inventory

WHERE = Location("inventory/tasks/prod/web.yaml", 1, 1)


def task(**fields):
    locations = {name: Location(WHERE.path, i + 2, 10) for i, name in enumerate(fields)}
    for i, (name, _) in enumerate(fields.get("env", ())):
        locations[f"env.{name}"] = Location(WHERE.path, 20 + i, 10)
    fields.setdefault("command", "true")
    return Task(
        name="web",
        team="prod",
        machines=("m",),
        location=WHERE,
        field_locations=locations,
        **fields,
    )


def lint(*tasks):
    inventory = Inventory(
        root="inventory",
        teams={},
        machines={},
        tasks={t.id + str(i): t for i, t in enumerate(tasks)},
    )
    return find_hardcoded_credentials(inventory)


SECRETS = {
    "private key": "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----",
    "rsa key": "-----BEGIN RSA PRIVATE KEY-----",
    "aws": "aws configure set aws_access_key_id AKIAIOSFODNN7EXAMPLE",
    "github": "git clone https://x:ghp_abcdefghijklmnopqrstuvwxyz0123456789@github.com/o/r",
    "github pat": "export GH=github_pat_11ABCDEFG0123456789abcdefghij",
    "slack": "curl -d token=xoxb-123456789012-abcdefABCDEF https://slack.com/api",
    "bearer": "curl -H 'Authorization: Bearer eyJhbGciOiJIUzI1Ni' https://api",
    "url": "psql postgres://app:hunter2secret@db:5432/app",
    "password option": "pg_tool --password=hunter2secret",
    "mysql -p": "mysql -u root -phunter2secret app < dump.sql",
    "mysql --password": "mysqldump --password hunter2secret app",
    "assignment": "export DB_PASSWORD=hunter2secret && ./migrate",
}

KINDS = {
    "private key": "a private key block",
    "rsa key": "a private key block",
    "aws": "an AWS access key id",
    "github": "a GitHub token",
    "github pat": "a GitHub token",
    "slack": "a Slack token",
    "bearer": "a bearer token",
    "url": "a password in a URL",
    "password option": "a password option",
    "mysql -p": "a mysql password",
    "mysql --password": "a mysql password",
    "assignment": "a password assignment",
}


@pytest.mark.parametrize("case", SECRETS)
def test_credential_shapes_in_commands_are_flagged_without_the_value(case):
    [finding] = lint(task(command=SECRETS[case]))
    assert finding.severity is Severity.WARNING
    assert finding.message == f"command contains what looks like {KINDS[case]}"
    assert finding.location == Location(WHERE.path, 2, 10)
    assert finding.hint == (
        "store it with 'reconcile vault set prod NAME', pass it as env: {NAME: {vault: NAME}} "
        "and write $NAME here"
    )
    for secret in ("hunter2", "AKIA", "ghp_", "xoxb", "eyJ", "github_pat", "b3Blbn"):
        assert secret not in str(finding)


@pytest.mark.parametrize(
    "text",
    [
        "psql postgres://app:${DB_PASSWORD}@db/app",
        "psql postgres://app:$DB_PASSWORD@db/app",
        'curl -H "Authorization: Bearer $TOKEN" https://api',
        "curl -H 'Authorization: Bearer ${TOKEN}'",
        "mysql -u root -p app",
        'mysql -u root -p"$PW" app',
        "mysql -p$PW",
        "mysql --password -e 'select 1'",
        'tool --password="$PASS"',
        "export DB_PASSWORD=$(cat /run/secrets/db)",
        "TOKEN=${T} ./run",
        'PASSWORD="" ./x',
        "systemctl restart web",
        "ls -p /tmp",
        "curl https://example.com:8443/a@b",
        "echo $DB_PASSWORD | login",
        "-----BEGIN PUBLIC KEY-----",
    ],
)
def test_references_and_ordinary_commands_are_not_findings(text):
    assert lint(task(command=text)) == []


@pytest.mark.parametrize("field", ["script", "check"])
def test_script_and_check_are_scanned_too(field):
    fields = (
        {"check": "curl -u admin:x https://admin:pa55word@host/health"}
        if field == "check"
        else {"script": "set -e\nexport API_TOKEN=abc123def\n", "command": None}
    )
    [finding] = lint(task(**fields))
    assert finding.message.startswith(f"{field} contains what looks like")


@pytest.mark.parametrize(
    "name",
    [
        "DB_PASSWORD",
        "PASSWD",
        "APP_SECRET",
        "GITHUB_TOKEN",
        "API_KEY",
        "APIKEY",
        "MY_PRIVATE_KEY",
        "AWS_SECRET_ACCESS_KEY",
        "ACCESS_KEY",
        "CREDENTIALS",
        "db_password",
        "GPG_PASSPHRASE",
    ],
)
def test_secret_looking_env_names_with_plain_values_are_flagged(name):
    [finding] = lint(task(env=((name, "s3cr3t-value"),)))
    assert finding.message == f"env {name} looks like a hardcoded credential"
    assert (
        finding.hint == f"use {{vault: {name}}} and store it with 'reconcile vault set prod {name}'"
    )
    assert finding.location == Location(WHERE.path, 20, 10)
    assert "s3cr3t" not in str(finding)


@pytest.mark.parametrize(
    "name", ["MODE", "PASSWORD_FILE", "TOKEN_PATH", "SECRET_NAME", "AWS_ACCESS_KEY_ID", "PATH"]
)
def test_ordinary_env_names_are_not_flagged(name):
    assert lint(task(env=((name, "value"),))) == []


@pytest.mark.parametrize(
    "value", ["$DB_PASSWORD", "${DB_PASSWORD}", "", "true", "false", "0", '"$X"']
)
def test_secret_names_with_references_or_trivial_values_are_not_flagged(value):
    assert lint(task(env=(("DB_PASSWORD", value),))) == []


def test_vault_references_are_never_flagged():
    assert lint(task(env=(("DB_PASSWORD", VaultRef("DB_PASSWORD")),))) == []


def test_credential_shapes_in_ordinary_env_values_are_flagged():
    [finding] = lint(task(env=(("DATABASE_URL", "postgres://app:hunter2@db/app"),)))
    assert finding.message == "env DATABASE_URL contains what looks like a password in a URL"
    assert "hunter2" not in str(finding)


def test_one_finding_per_secret_env_even_with_several_shapes():
    findings = lint(task(env=(("API_TOKEN", "ghp_abcdefghijklmnopqrstuvwxyz0123456789"),)))
    assert [f.message for f in findings] == ["env API_TOKEN looks like a hardcoded credential"]


def test_findings_are_sorted_by_location():
    findings = lint(task(env=(("B_TOKEN", "x1"), ("A_TOKEN", "x2")), command="mysql -pabc"))
    assert [f.location.line for f in findings] == [3, 20, 21]


def test_two_different_secrets_in_one_field_are_two_findings():
    findings = lint(task(command="AWS=AKIAIOSFODNN7EXAMPLE; curl -H 'Authorization: Bearer abc' x"))
    assert [f.message for f in findings] == [
        "command contains what looks like a bearer token",
        "command contains what looks like an AWS access key id",
    ]


def test_helpers():
    assert looks_like_secret_name("DB_PASSWORD") and not looks_like_secret_name("DB_PASSWORD_FILE")
    assert credential_kinds("nothing here") == []


def test_locations_come_from_the_loaded_inventory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "inventory" / "tasks" / "prod").mkdir(parents=True)
    (tmp_path / "inventory" / "tasks" / "prod" / "web.yaml").write_text(
        "name: web\nmachines: [m]\ncommand: mysql -psecret\nenv:\n  DB_PASSWORD: hunter2\n  OK: {vault: OK}\n"
    )
    inventory, _ = load_inventory("inventory")
    assert [str(f) for f in find_hardcoded_credentials(inventory)] == [
        "inventory/tasks/prod/web.yaml:3:10: warning: command contains what looks like a mysql password "
        "(hint: store it with 'reconcile vault set prod NAME', pass it as env: {NAME: {vault: NAME}} and write $NAME here)",
        "inventory/tasks/prod/web.yaml:5:16: warning: env DB_PASSWORD looks like a hardcoded credential "
        "(hint: use {vault: DB_PASSWORD} and store it with 'reconcile vault set prod DB_PASSWORD')",
    ]


def test_alert_urls_and_state_url_with_passwords_are_flagged():
    team = Team(
        "prod",
        alerts=(
            AlertTarget("mailto://ops:hunter2@example.com"),
            AlertTarget(VaultRef("URL")),
            AlertTarget("json://hooks.example.com/x"),
        ),
        location=WHERE,
    )
    settings = Settings(
        state="postgresql://app:hunter2@db/state",
        location=Location("inventory/reconciler.yaml", 1, 1),
    )
    findings = find_hardcoded_credentials(Inventory("inventory", {"prod": team}, {}, {}, settings))
    assert [str(f) for f in findings] == [
        "inventory/reconciler.yaml:1:1: warning: state contains what looks like a password in a URL "
        "(hint: give the state URL with --state or RECONCILE_STATE instead of committing it)",
        "inventory/tasks/prod/web.yaml:1:1: warning: alerts[0] of team prod contains what looks like a password in a URL "
        "(hint: use {vault: ALERT_URL} and store the URL with 'reconcile vault set prod ALERT_URL')",
    ]


def test_state_url_with_a_reference_or_no_password_is_fine():
    for state in (
        "postgresql://app@db/state",
        "sqlite:///.reconciler/state.db",
        "postgresql://app:${PW}@db/x",
    ):
        inventory = Inventory("inventory", {}, {}, {}, Settings(state=state))
        assert find_hardcoded_credentials(inventory) == []
