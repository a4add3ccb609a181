"""A wake the daemon's tick could not serve because the last pass was still planning (SIGHUP,
a file changed under --watch-files) is served as soon as that pass has planned, not a whole
poll interval later. Found by CI: a token rotated in its vault, then SIGHUP, was still
refused 30 s later on a slow machine, the reload having come while the pass its vault
write started was reading the inventory."""

from __future__ import annotations

import signal

from tests.support.http_daemon import http_daemon
from tests.support.vault_project import vault_set, vaulted_http
from tests.support.waiting import wait_until


def test_a_reload_sent_while_a_pass_plans_takes_effect_once_it_planned(vaulted, tmp_path):
    project = vaulted
    old, new = "console-token-old-8b2", "console-token-new-4f0"
    env = vaulted_http(project, old, "hook-secret-1d9")
    released = tmp_path / "release-the-pass"
    # Every pass is held before it reads the inventory until `released` exists: the first
    # pass is planning for as long as the test wants (the poll interval is the default 30 s).
    env["RECONCILER_FAILPOINTS"] = f"before_pass=wait:{released}"
    with http_daemon(project.root, "--watch-files", env=env) as served:

        def admitted(token: str) -> bool:
            headers = {"Authorization": f"Bearer {token}"}
            return served.ask("GET", "/metrics", headers=headers)[0] == 200

        assert admitted(old)
        vault_set(project, "ops", "CONSOLE_TOKEN", new, project.alice)
        served.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "reloading settings" in served.log_text(), message="the reload")
        assert admitted(old)  # nothing is re-read under a pass that has not planned yet
        released.touch()
        wait_until(lambda: admitted(new), timeout=10, message="the new token to be admitted")
        assert not admitted(old)
        served.proc.send_signal(signal.SIGTERM)
        assert served.proc.wait(timeout=60) == 0, served.log_text()
    assert new not in served.log_text() and old not in served.log_text()
