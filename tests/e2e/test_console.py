"""The web console over real HTTP (`reconcile serve`) and as static files (`reconcile status
--format html -o DIR`): every page answers, its JSON twin holds the CLI's JSON, nothing
changes state, and the console is refused anywhere but loopback."""

from __future__ import annotations

import json
import re
import signal
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import pytest

from tests.support.console import served
from tests.support.http_daemon import http_daemon
from tests.support.project import Project
from tests.support.review import git


@pytest.fixture
def ran(project: Project) -> Project:
    """A project whose pass ran three tasks: one succeeded, one failed, one skipped."""
    project.task("good", "command: echo all good\npriority: 1\n")
    project.task("bad", "command: echo about to fail; exit 3\npriority: 2\n")
    project.task("checked", "command: echo never\ncheck: 'true'\n")
    git(project.root, "init", "-q")
    (project.root / ".gitignore").write_text(".reconciler/\nsite/\n")
    git(project.root, "add", "-A")
    git(project.root, "commit", "-qm", "tasks")
    project.run("--once", "-q", code=1)
    return project


def _links(page: bytes) -> list[str]:
    class Collect(HTMLParser):
        found: list[str] = []

        def handle_starttag(self, tag, attrs):
            for name, value in attrs:
                if name in ("href", "src") and value and not value.startswith("data:"):
                    self.found.append(value)

    collect = Collect()
    collect.found = []
    collect.feed(page.decode())
    return collect.found


def test_every_page_answers_and_its_json_twin_is_the_clis_json(ran: Project):
    status = ran.run("status", "--format", "json", code=0).json()
    listed = ran.run("queue", "list", "--format", "json", code=0).json()
    failed = next(r for r in listed if r["status"] == "failed")
    shown = ran.run("queue", "show", str(failed["id"]), "--format", "json", code=0).json()
    with served(ran.root) as console:
        overview = console.json("/")
        # The overview is `status --format json`, plus what the page adds beside it.
        for key, value in status.items():
            if key != "machines":
                assert overview[key] == value, key
        assert [{k: m[k] for k in status["machines"][0]} for m in overview["machines"]] == (
            status["machines"]
        )
        assert [r["id"] for r in overview["recent_failures"]] == [failed["id"]]
        head = git(ran.root, "rev-parse", "HEAD").strip()
        assert overview["last_pass"]["commit"] == head and overview["last_pass"]["at"]
        assert overview["audit"]["entries"] > 0 and overview["audit"]["head"]
        assert {r["status"] for r in overview["running_runs"]} <= {"running"}
        assert console.json("/runs")["runs"] == listed
        assert console.json(f"/runs/{failed['id']}") == shown
        assert console.json(f"/api/runs/{failed['id']}") == shown
        assert shown["output"] == "about to fail\n"
        task = console.json("/tasks/ops/bad")
        assert task["latest_runs"] == [r for r in listed if r["task"] == "ops/bad"]
        assert "exit 3" in task["definition"]
        machine = console.json("/machines/box")
        assert machine["team"] == "ops" and machine["max_parallel"] == 4
        assert [r["id"] for r in machine["runs"]] == [r["id"] for r in listed]
        # Every page as HTML, and every link on it leads somewhere.
        seen: set[str] = set()
        for target in ("/", "/runs", f"/runs/{failed['id']}", "/tasks/ops/bad", "/machines/box"):
            code, headers, body = console.get(target)
            assert code == 200, target
            assert headers["Content-Type"].startswith("text/html")
            assert "script-src 'self'" in headers["Content-Security-Policy"]
            for link in _links(body):
                absolute = urljoin(console.url + target.lstrip("/"), link)
                path = urlsplit(absolute)
                local = path.path + (f"?{path.query}" if path.query else "")
                if path.netloc == f"127.0.0.1:{console.port}" and local not in seen:
                    seen.add(local)
                    assert console.get(local)[0] == 200, f"{target} links to {local}"


def test_runs_filter_and_page_newest_first(ran: Project):
    for n in range(3):
        ran.task(f"more{n}", f"command: echo {n}\n")
    git(ran.root, "add", "-A")
    git(ran.root, "commit", "-qm", "more tasks")
    ran.run("--once", "-q", code=0)
    listed = ran.run("queue", "list", "--format", "json", code=0).json()
    head = git(ran.root, "rev-parse", "HEAD").strip()
    with served(ran.root) as console:
        assert [r["status"] for r in console.json("/runs?status=failed")["runs"]] == ["failed"]
        both = console.json("/runs?status=failed&status=skipped")["runs"]
        assert {r["status"] for r in both} == {"failed", "skipped"}
        assert [r["task"] for r in console.json("/runs?task=ops/good")["runs"]] == ["ops/good"]
        assert len(console.json("/runs?machine=box&team=ops")["runs"]) == len(listed)
        assert console.json("/runs?machine=nowhere")["runs"] == []
        assert console.json("/runs?commit=ffff0000")["runs"] == []
        newest = [r for r in listed if r["commit"] == head]
        assert len(newest) >= 3 and console.json(f"/runs?commit={head[:7]}")["runs"] == newest
        # Keyset pages: newest first, each page after the last id of the one before.
        first = console.json("/runs?limit=2")
        ids = [r["id"] for r in first["runs"]]
        assert ids == [r["id"] for r in listed][:2] and first["next_before"] == ids[-1]
        older = console.json(f"/runs?before={ids[-1]}&limit=2")
        assert [r["id"] for r in older["runs"]] == [r["id"] for r in listed][2:4]
        rest = console.json(f"/runs?before={older['next_before']}")
        assert [r["id"] for r in rest["runs"]] == [r["id"] for r in listed][4:]
        assert rest["next_before"] is None
        code, _, body = console.get("/runs?status=exploded")
        assert code == 400 and b"exploded" in body
        assert console.get("/runs/999999")[0] == 404
        assert console.get("/tasks/ops/none")[0] == 404
        assert console.get("/runs/1;drop")[0] == 400


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_no_page_changes_state(ran: Project, method: str):
    before = ran.run("queue", "list", "--format", "json", code=0).json()
    failed = next(r for r in before if r["status"] == "failed")
    with served(ran.root) as console:
        for target in ("/", f"/runs/{failed['id']}", f"/runs/{failed['id']}?action=retry"):
            code, headers, _ = console.get(target, method=method, body=b"retry=1")
            assert code == 405, (method, target)
            assert headers["Allow"] == "GET, HEAD"
        code, headers, body = console.get("/", method="HEAD")
        assert code == 200 and body == b"" and int(headers["Content-Length"]) > 0
    assert ran.run("queue", "list", "--format", "json", code=0).json() == before


def test_a_configured_token_guards_every_page_and_asset(ran: Project):
    token = "console-token-5b1d9e"
    with served(ran.root, env={"RECONCILE_HTTP_TOKEN": token}) as console:
        for target in ("/", "/runs?format=json", "/runs/1", "/api/runs/1", "/static/console.css"):
            assert console.get(target)[0] == 401, target
            wrong = {"Authorization": f"Bearer {token[:-1]}0"}
            assert console.get(target, headers=wrong)[0] == 401, target
            right = {"Authorization": f"Bearer {token}"}
            assert console.get(target, headers=right)[0] == 200, target
    assert token not in console.proc.args


def test_the_daemon_serves_the_console_on_its_http_addr(ran: Project):
    shown = ran.run("queue", "show", "1", "--format", "json", code=0).json()
    with http_daemon(ran.root, "--watch-files") as daemon:
        code, headers, body = daemon.ask("GET", "/")
        assert code == 200 and b"<h1>Overview</h1>" in body
        assert headers["Content-Type"].startswith("text/html")
        code, _, body = daemon.ask("GET", "/runs/1?format=json")
        assert code == 200 and json.loads(body) == shown
        assert daemon.ask("POST", "/runs/1")[0] == 405
        assert daemon.ask("GET", "/metrics")[0] == 200


def test_the_console_is_served_on_loopback_only(project: Project):
    project.task("t", "command: 'true'\n")
    result = project.run("serve", "--addr", "0.0.0.0:0", code=2)
    assert "loopback" in result.err and "Traceback" not in result.err
    assert project.run("serve", "--addr", "nonsense", code=2).err.count("HOST:PORT") == 1


def test_status_writes_the_pages_as_static_files_with_relative_links(ran: Project):
    site = ran.root / "site"
    result = ran.run("status", "--format", "html", "-o", str(site), code=0)
    assert "index.html" in result.out
    pages = sorted(p.relative_to(site).as_posix() for p in site.rglob("*.html"))
    assert "index.html" in pages and "runs.html" in pages
    assert {"tasks/ops/good.html", "tasks/ops/bad.html", "machines/box.html"} <= set(pages)
    for page in site.rglob("*.html"):
        text = page.read_bytes()
        assert b"<script" not in text  # nothing to keep up to date in a file
        for link in _links(text):
            assert not link.startswith(("/", "http")), f"{page}: {link}"
            target = (page.parent / link.split("#")[0]).resolve() if link.split("#")[0] else page
            assert target.exists(), f"{page.relative_to(site)} links to missing {link}"
    assert ran.run("status", "--format", "html", code=2).err.count("-o DIR") == 1
    assert "--format html" in ran.run("status", "-o", str(site), code=2).err


def test_pages_escape_what_the_inventory_and_the_output_hold(project: Project):
    project.task("shout", "description: '<b>bold</b>'\ncommand: echo '<script>alert(1)</script>'\n")
    project.task("colour", r"command: printf '\033[31mred\033[0m \033]0;title\007\001x\r\n'")
    project.run("--once", "-q", code=0)
    with served(project.root) as console:
        colour = console.json("/runs?task=ops/colour")["runs"][0]["id"]
        assert "\x1b[31m" in console.json(f"/runs/{colour}")["output"]  # the JSON keeps it
        # The page shows what a terminal would: no "[31m", no window title, no stray bytes.
        shown = console.get(f"/runs/{colour}")[2].decode()
        assert '<pre id="output" class="output">red \ufffdx\n</pre>' in shown
        shout = console.json("/runs?task=ops/shout")["runs"][0]["id"]
        for target in (f"/runs/{shout}", "/tasks/ops/shout", "/"):
            body = console.get(target)[2].decode()
            assert "<script>alert" not in body and "<b>bold" not in body
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in console.get(f"/runs/{shout}")[2].decode()
        assert re.search(r"&lt;b&gt;bold&lt;/b&gt;", console.get("/tasks/ops/shout")[2].decode())


def test_secrets_are_masked_on_every_page_while_the_run_goes_on_and_after(vaulted: Project):
    from tests.support.cli import reaped, spawn
    from tests.support.vault_project import SECRET
    from tests.support.waiting import wait_until

    go = vaulted.root / "go"
    vaulted.task(
        "leak",
        f"""\
        env: {{DB_PASSWORD: {{vault: DB_PASSWORD}}}}
        command: |
          echo "password is $DB_PASSWORD"
          while [ ! -e "{go}" ]; do sleep 0.05; done
          echo "still $DB_PASSWORD"; exit 1
        """,
    )
    once = spawn("--once", "-q", "--identity", str(vaulted.alice), cwd=vaulted.root)
    with served(vaulted.root) as console, reaped(once):

        def pages() -> list[bytes]:
            targets = ["/", "/runs", "/runs/1", "/tasks/ops/leak", "/machines/box"]
            return [console.get(t)[2] for t in targets] + [
                console.get(t + "?format=json")[2] for t in targets
            ]

        def output() -> str:
            code, _, body = console.get("/runs/1?format=json")
            return json.loads(body)["output"] if code == 200 else ""

        wait_until(lambda: "password is" in output(), timeout=30, message="the first line")
        assert console.json("/runs/1")["status"] == "running"
        for body in pages():
            assert SECRET.encode() not in body
        assert "password is ***" in console.json("/runs/1")["output"]
        go.write_text("")
        wait_until(lambda: console.json("/runs/1")["status"] == "failed", timeout=30)
        assert once.wait(timeout=30) == 1
        for body in pages():
            assert SECRET.encode() not in body
        assert "still ***" in console.json("/runs/1")["output"]


def test_serve_starts_before_the_first_pass_and_stops_cleanly_on_sigterm(project: Project):
    import signal

    project.task("later", "command: echo later\n")
    with served(project.root) as console:
        assert set(console.json("/")["runs"].values()) == {0}  # no store yet, and none made
        assert console.json("/runs")["runs"] == []
        assert not project.state.exists()
        project.run("--once", "-q", code=0)
        from tests.support.waiting import wait_until

        wait_until(lambda: console.json("/runs")["runs"], message="the first pass's runs")
        console.proc.send_signal(signal.SIGTERM)
        assert console.proc.wait(timeout=30) == 0
        assert "Traceback" not in console.proc.stderr.read()


def _rss_kib(pid: int) -> int:
    status = open(f"/proc/{pid}/status").read()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1))


def test_varying_the_query_string_does_not_grow_the_server_without_bound(ran: Project):
    # Every distinct query is a page of its own; a client varying it (a filter value, a
    # cache-buster) must not make the console keep every answer, nor a lock for each.
    padding = "x" * 3000
    with served(ran.root) as console:

        def ask(first: int, count: int) -> None:
            for n in range(first, first + count):
                code, _, body = console.get(f"/runs?task={padding}{n}")
                assert code == 200 and padding.encode() in body  # the filter is shown back

        ask(0, 300)  # warmed: the cache full, the allocator grown
        settled = _rss_kib(console.proc.pid)
        ask(300, 1500)  # 1500 more distinct pages: ~6 KiB of key and ~10 KiB of body each
        grown = _rss_kib(console.proc.pid) - settled
        assert grown < 8 * 1024, f"the console grew by {grown} KiB over 1500 distinct pages"


def test_a_halted_run_is_marked_as_a_failure_of_its_rollout(project: Project):
    project.write("machines/box2.yaml", "name: box2\nteam: ops\ntransport: local\n")
    project.write(
        "tasks/ops/wave.yaml",
        "name: wave\nmachines: [box, box2]\ncommand: exit 1\n"
        "rollout: {batches: [1, 100%], max_failed: 0}\n",
    )
    project.run("--once", "-q", code=1)
    with served(project.root) as console:
        halted = console.json("/runs?status=halted")["runs"]
        assert [r["machine"] for r in halted] == ["box2"]
        for target in ("/runs?status=halted", f"/runs/{halted[0]['id']}"):
            assert '<span class="badge bad">halted</span>' in console.get(target)[2].decode()


def test_the_overview_shows_where_each_rollout_stands(project: Project):
    project.write("machines/box2.yaml", "name: box2\nteam: ops\ntransport: local\n")
    project.write(
        "tasks/ops/wave.yaml",
        "name: wave\nmachines: [box, box2]\ncommand: 'true'\n"
        "rollout: {batches: [1, 100%], pause: 1h}\n",
    )
    project.run("--once", "-q", code=0)
    with served(project.root) as console:
        [stand] = console.json("/")["rollouts"]
        assert stand["state"] == "paused" and stand["batch"] == 2
        page = console.get("/")[2].decode()
        rollouts = page[page.index('<h2 id="rollouts">') :].split("</table>")[0]
        cells = re.findall(r"<td>(.*?)</td>", rollouts)
        assert cells[0] == '<a href="/tasks/ops/wave">ops/wave</a>'
        assert cells[1:4] == [
            '<span class="badge wait">paused</span>',
            "2 of 2",
            '<a href="/machines/box2">box2</a>',
        ]
        assert cells[4:6] == ["0", "0"] and stand["paused_until"][:16] in page


def test_serve_reads_a_rotated_token_again_on_sighup(vaulted: Project):
    """As the daemon's listener does: the token in a team vault leaked, the operator rotates it
    and sends SIGHUP; from then on the new token is admitted and the old one refused, and
    `reconcile serve` goes on serving (SIGHUP does not stop it)."""
    from tests.support.vault_project import vault_set, vaulted_http
    from tests.support.waiting import wait_until

    project = vaulted
    old, new = "serve-token-old-81d4", "serve-token-new-2fa7"
    env = vaulted_http(project, old, "hook-secret-unused-5e0")
    project.run("--once", "-q", code=0, env=env)
    with served(project.root, env=env) as console:

        def admitted(token: str) -> bool:
            return console.get("/", headers={"Authorization": f"Bearer {token}"})[0] == 200

        assert admitted(old) and not admitted(new)
        vault_set(project, "ops", "CONSOLE_TOKEN", new, project.alice)
        console.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: admitted(new), timeout=30, message="the new token to be admitted")
        assert not admitted(old)
        assert console.proc.poll() is None
        console.proc.send_signal(signal.SIGTERM)
        assert console.proc.wait(timeout=30) == 0
        log = console.proc.stderr.read()
    for value in (old, new):
        assert value not in log
