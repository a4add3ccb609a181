"""The console's pages as HTML: pure functions from a page's data (its JSON twin) to text.

Every value is escaped (`esc`); nothing from the store or the inventory reaches the page
unescaped. Links come from a `Links`, so the same pages work served (`/runs/7`) and written as
static files opened from disk (`../runs/7.html`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any
from urllib.parse import quote, urlencode

ACTIVE = ("pending", "running")
DEFAULT_PAGE = 50  # runs on a page unless `?limit=` says otherwise (pages.PAGE_SIZE)
STATUS_CLASS = {
    "succeeded": "ok",
    "skipped": "ok",
    "pending": "wait",
    "running": "run",
    "failed": "bad",
    "blocked": "bad",
    "unknown": "bad",
    "killed": "bad",
    "halted": "bad",
    "cancelled": "off",
}
# What a terminal acts on rather than shows: colour and cursor sequences (dropped) and the
# other control characters (shown as U+FFFD), which a page would print as stray "[31m" or not
# at all. static/console.js cleans the output it fetches the same way.
TERMINAL_SEQUENCE = re.compile(
    r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]"
)
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def esc(value: object) -> str:
    return "" if value is None else escape(str(value), quote=True)


def terminal_text(text: str | None) -> str:
    """A command's output as a page shows it: no terminal sequences, line ends as "\\n"."""
    plain = TERMINAL_SEQUENCE.sub("", text or "").replace("\r\n", "\n").replace("\r", "\n")
    return CONTROL.sub("\ufffd", plain)


@dataclass(frozen=True)
class Links:
    """Where each page is: served (`prefix` "/", no suffix) or static (`prefix` the way back
    to the site's root from the page being written, suffix ".html")."""

    prefix: str = "/"
    static: bool = False

    def at_depth(self, depth: int) -> Links:
        return Links("../" * depth or "./", True) if self.static else self

    def overview(self) -> str:
        return self.prefix + ("index.html" if self.static else "")

    def runs(self, query: dict[str, Any] | None = None) -> str:
        base = self.prefix + ("runs.html" if self.static else "runs")
        pairs = [(k, v) for k, vs in (query or {}).items() for v in _listed(vs) if v is not None]
        return base + ("?" + urlencode(pairs) if pairs and not self.static else "")

    def run(self, run_id: int) -> str:
        return f"{self.prefix}runs/{int(run_id)}" + (".html" if self.static else "")

    def task(self, task_id: str) -> str:
        return self.prefix + "tasks/" + _path(task_id) + (".html" if self.static else "")

    def machine(self, name: str) -> str:
        return self.prefix + "machines/" + _path(name) + (".html" if self.static else "")

    def asset(self, name: str) -> str:
        return f"{self.prefix}static/{name}"


def _listed(value) -> list:
    return list(value) if isinstance(value, list | tuple) else [value]


def _path(text: str) -> str:
    return "/".join(quote(part, safe="") for part in text.split("/"))


def json_href(href: str) -> str:
    return href + ("&" if "?" in href else "?") + "format=json"


# --- the frame --------------------------------------------------------------------------------


def page(
    title: str,
    body: str,
    links: Links,
    *,
    here: str,
    json_link: str | None,
    refresh: int | None,
    live: str = "",
) -> str:
    """A whole page. `refresh`: seconds between reloads without JavaScript (None: none);
    with JavaScript, console.js fetches the page (or a run's JSON) and updates it in place.
    `live`: the data attributes that tell console.js what to update."""
    nav = "".join(
        f'<a href="{esc(href)}"{" class=here" if name == here else ""}>{esc(name)}</a>'
        for name, href in (("Overview", links.overview()), ("Runs", links.runs()))
    )
    twin = f'<a class="twin" href="{esc(json_link)}">JSON</a>' if json_link else ""
    noscript = (
        f'<noscript><meta http-equiv="refresh" content="{int(refresh)}"></noscript>'
        if refresh and not links.static
        else ""
    )
    script = (
        "" if links.static else f'<script src="{esc(links.asset("console.js"))}" defer></script>'
    )
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)} · reconcile</title>"
        '<link rel="icon" href="data:,">'
        f'<link rel="stylesheet" href="{esc(links.asset("console.css"))}">'
        f"{noscript}{script}</head>\n"
        f'<body><header><a class="brand" href="{esc(links.overview())}">reconcile</a>'
        f"<nav>{nav}</nav>{twin}</header>\n"
        f'<main id="live"{live}>\n<h1>{esc(title)}</h1>\n{body}\n</main></body></html>\n'
    )


def badge(status: str | None) -> str:
    if status is None:
        return ""
    return f'<span class="badge {STATUS_CLASS.get(status, "off")}">{esc(status)}</span>'


def up_badge(up: bool) -> str:
    return '<span class="badge ok">up</span>' if up else '<span class="badge bad">down</span>'


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], empty: str, cls: str = "") -> str:
    """A table of already-rendered cells; `empty` (escaped) when there are no rows."""
    rows = list(rows)
    if not rows:
        return f'<p class="empty">{esc(empty)}</p>'
    head = "".join(f'<th scope="col">{esc(h)}</th>' for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def when(value: str | None) -> str:
    """A timestamp as the store holds it (ISO 8601 UTC), shorter, with the full one on hover."""
    if not value:
        return '<span class="dim">–</span>'
    short = value.replace("T", " ")[:19]
    return f'<time datetime="{esc(value)}" title="{esc(value)}">{esc(short)}</time>'


ROLLOUT_CLASS = {"running": "run", "paused": "wait", "halted": "bad", "done": "ok"}


def rollout_badge(state: str) -> str:
    return f'<span class="badge {ROLLOUT_CLASS.get(state, "off")}">{esc(state)}</span>'


def short_sha(sha: str | None) -> str:
    if not sha:
        return '<span class="dim">–</span>'
    return f'<code title="{esc(sha)}">{esc(sha[:10])}</code>'


def _run_rows(runs: Sequence[dict], links: Links, *, with_error: bool = False) -> list[list[str]]:
    rows = []
    for r in runs:
        row = [
            f'<a href="{esc(links.run(r["id"]))}">#{esc(r["id"])}</a>',
            badge(r["status"]),
            f'<a href="{esc(links.task(r["task"]))}">{esc(r["task"])}</a>',
            f'<a href="{esc(links.machine(r["machine"]))}">{esc(r["machine"])}</a>',
            esc(r["priority"]),
            esc(r["attempt"]),
            esc("" if r["exit_code"] is None else r["exit_code"]),
            when(r["finished_at"] or r["started_at"] or r["created_at"]),
        ]
        if with_error:
            row.append(f'<span class="error">{esc(r.get("error") or "")}</span>')
        rows.append(row)
    return rows


RUN_HEADERS = ("Run", "Status", "Task", "Machine", "Prio", "Attempt", "Exit", "When")


def runs_table(runs: Sequence[dict], links: Links, empty: str, *, with_error=False) -> str:
    headers = RUN_HEADERS + (("Error",) if with_error else ())
    return table(headers, _run_rows(runs, links, with_error=with_error), empty, "runs")


# --- pages ------------------------------------------------------------------------------------


def overview_page(d: dict, links: Links) -> str:
    queued = sum(d["queue_depth"].values())
    up = sum(1 for m in d["machines"] if m["up"])
    cards = "".join(
        f'<a class="card {cls}" href="{esc(href)}"><b>{esc(n)}</b><span>{esc(label)}</span></a>'
        for n, label, cls, href in (
            (queued, "queued", "wait" if queued else "", links.runs({"status": "pending"})),
            (
                d["running"],
                "running",
                "run" if d["running"] else "",
                links.runs({"status": "running"}),
            ),
            (
                d["failed_last_24h"],
                "failed in 24 h",
                "bad" if d["failed_last_24h"] else "ok",
                links.runs({"status": d["problem_statuses"]}),
            ),
            (len(d["held"]), "held", "wait" if d["held"] else "", "#held"),
            (
                f"{up}/{len(d['machines'])}",
                "machines up",
                "ok" if up == len(d["machines"]) else "bad",
                "#machines",
            ),
        )
    )
    depth = table(
        ("Priority", *d["queue_depth"].keys()),
        [["queued", *(esc(n) for n in d["queue_depth"].values())]],
        "",
        "compact",
    )
    teams = table(
        ("Team", "Queued"),
        [[esc(t), esc(n)] for t, n in d["by_team"].items()],
        "Nothing is queued.",
        "compact",
    )
    held = table(
        ("Run", "Task", "Machine", "Prio", "Held by", "Until"),
        [
            [
                f'<a href="{esc(links.run(h["run"]))}">#{esc(h["run"])}</a>',
                f'<a href="{esc(links.task(h["task"]))}">{esc(h["task"])}</a>',
                f'<a href="{esc(links.machine(h["machine"]))}">{esc(h["machine"])}</a>',
                esc(h["priority"]),
                f'<span class="kind">{esc(h["kind"])}</span> {esc(h["reason"])}',
                when(h["until"]),
            ]
            for h in d["held"]
        ],
        "No run is held.",
    )
    rollouts = table(
        ("Task", "State", "Batch", "Its machines", "Failed", "Allowed", "Paused until"),
        [
            [
                f'<a href="{esc(links.task(r["task"]))}">{esc(r["task"])}</a>',
                rollout_badge(r["state"]),
                f"{esc(r['batch'])} of {esc(len(r['batches']))}",
                ", ".join(
                    f'<a href="{esc(links.machine(m))}">{esc(m)}</a>'
                    for m in r["batches"][r["batch"] - 1]
                ),
                esc(r["failed"]),
                esc(r["max_failed"]),
                when(r["paused_until"]),
            ]
            for r in d.get("rollouts", [])
        ],
        "No rollout is under way.",
    )
    machines = table(
        ("Machine", "Team", "Transport", "State", "Running", "Pending", "Last seen"),
        [
            [
                f'<a href="{esc(links.machine(m["name"]))}">{esc(m["name"])}</a>',
                esc(m["team"]),
                esc(m["transport"]),
                up_badge(m["up"]),
                esc(m["running"]),
                esc(m["pending"]),
                when(m.get("last_seen")),
            ]
            for m in d["machines"]
        ],
        "The inventory has no machines.",
    )
    last = d.get("last_pass")
    audit = d["audit"]
    facts = (
        '<dl class="facts">'
        f"<dt>Last reconciled commit</dt><dd>{short_sha(last['commit'] if last else None)}"
        f" {when(last['at']) if last else '<span class=dim>no pass yet</span>'}</dd>"
        f"<dt>Audit chain</dt><dd>{esc(audit['entries'])} entries"
        + (f", head <code>{esc((audit['head'] or '')[:16])}</code>" if audit["head"] else "")
        + (f", {esc(audit['unsealed'])} waiting to be sealed" if audit["unsealed"] else "")
        + (f", anchored at entry {esc(audit['anchor'])}" if audit["anchor"] else "")
        + f" {when(audit['at']) if audit['at'] else ''}"
        + ' <span class="dim">(a full check: <code>reconcile audit verify</code>)</span></dd>'
        "</dl>"
    )
    body = (
        f'<div class="cards">{cards}</div>\n{facts}\n'
        f'<section class="split"><div><h2>Queue by priority</h2>{depth}</div>'
        f"<div><h2>Queue by team</h2>{teams}</div></section>\n"
        f"<h2>Running now</h2>{runs_table(d['running_runs'], links, 'Nothing is running.')}\n"
        f'<h2 id="held">Held</h2>{held}\n'
        f'<h2 id="rollouts">Rollouts</h2>{rollouts}\n'
        "<h2>Failures in the last 24 hours</h2>"
        + runs_table(d["recent_failures"], links, "No failures.", with_error=True)
        + f'\n<h2 id="machines">Machines</h2>{machines}'
    )
    return page(
        "Overview",
        body,
        links,
        here="Overview",
        json_link=None if links.static else json_href(links.overview()),
        refresh=10,
        live=' data-live="page" data-every="3"',
    )


def runs_page(d: dict, links: Links) -> str:
    f = d["filters"]
    choices = d["choices"]

    def select(name: str, options: list[str], chosen: str | None) -> str:
        opts = '<option value="">any</option>' + "".join(
            f'<option value="{esc(o)}"{" selected" if o == chosen else ""}>{esc(o)}</option>'
            for o in options
        )
        return (
            f'<label>{esc(name)}<select name="{esc(name)}" id="filter-{esc(name)}">'
            f"{opts}</select></label>"
        )

    form = (
        ""
        if links.static
        else (
            f'<form class="filters" method="get" action="{esc(links.runs())}">'
            + '<fieldset class="chips"><legend>status</legend>'
            + "".join(
                f'<label class="chip"><input type="checkbox" name="status" value="{esc(o)}"'
                f' id="filter-status-{esc(o)}"{" checked" if o in f["status"] else ""}>'
                f"{esc(o)}</label>"
                for o in choices["status"]
            )
            + "</fieldset>"
            + select("team", choices["team"], f["team"])
            + select("task", choices["task"], f["task"])
            + select("machine", choices["machine"], f["machine"])
            + f'<label>commit<input name="commit" id="filter-commit" value="{esc(f["commit"])}"'
            ' placeholder="sha prefix" size="12"></label>'
            '<button type="submit" id="filter-apply">Filter</button>'
            f'<a class="clear" href="{esc(links.runs())}">clear</a></form>'
        )
    )
    query = {k: v for k, v in f.items() if v}
    if d.get("limit") and d["limit"] != DEFAULT_PAGE:
        query["limit"] = d["limit"]
    pager = ""
    if d["next_before"] is not None and not links.static:
        pager = (
            f'<p class="pager"><a id="next-page" href="'
            f'{esc(links.runs({**query, "before": d["next_before"]}))}">older runs →</a></p>'
        )
    if d["before"] is not None and not links.static:
        pager = f'<p class="pager"><a href="{esc(links.runs(query))}">← newest</a></p>' + pager
    listing = runs_table(d["runs"], links, "No run matches.")
    body = f'{form}<div id="listing">{listing}{pager}</div>'
    return page(
        "Runs",
        body,
        links,
        here="Runs",
        json_link=None if links.static else json_href(links.runs({**query, "before": d["before"]})),
        refresh=10 if d["before"] is None else None,
        live=' data-live="page" data-every="3" data-region="listing"'
        if d["before"] is None
        else "",
    )


def run_page(d: dict, links: Links) -> str:
    active = d["status"] in ACTIVE
    facts = [
        ("Status", f'<span data-field="status">{badge(d["status"])}</span>'),
        ("Task", f'<a href="{esc(links.task(d["task"]))}">{esc(d["task"])}</a>'),
        ("Machine", f'<a href="{esc(links.machine(d["machine"]))}">{esc(d["machine"])}</a>'),
        ("Attempt", f'<span data-field="attempt">{esc(d["attempt"])}</span>'),
        ("Priority", esc(d["priority"])),
        ("Exit code", f'<span data-field="exit_code">{esc(d["exit_code"])}</span>'),
        ("Created", when(d["created_at"])),
        ("Started", f'<span data-field="started_at">{when(d["started_at"])}</span>'),
        ("Finished", f'<span data-field="finished_at">{when(d["finished_at"])}</span>'),
        ("Not before", when(d["not_before"])),
        ("Reason", esc(d["reason"])),
        ("Trigger", esc(d.get("trigger"))),
        ("Actor", esc(d.get("actor")) or '<span class="dim">–</span>'),
        ("Version", f"<code>{esc(d['version'])}</code>"),
        ("Commit", short_sha(d["commit"])),
        ("Slot", esc(d["slot"]) or '<span class="dim">–</span>'),
    ]
    if d.get("held"):
        facts.append(("Held by", esc(d["held"])))
    grid = "".join(f"<dt>{esc(k)}</dt><dd>{v}</dd>" for k, v in facts)
    error = d.get("error")
    body = (
        f'<dl class="facts grid">{grid}</dl>\n'
        f'<div class="error-box" data-field="error"{"" if error else " hidden"}>{esc(error)}</div>\n'
        '<h2>Output <span class="dim" id="live-note">'
        + ("(updates while the run goes on)" if active else "")
        + "</span></h2>\n"
        f'<pre id="output" class="output">{esc(terminal_text(d.get("output")))}</pre>'
        + ("" if d.get("output") else '<p class="empty" id="no-output">No output yet.</p>')
    )
    json_link = json_href(links.run(d["id"]))
    return page(
        f"Run #{d['id']}",
        body,
        links,
        here="Runs",
        json_link=None if links.static else json_link,
        refresh=2 if active else None,
        live=(f' data-live="run" data-json="{esc(json_link)}"' if active else ""),
    )


def task_page(d: dict, links: Links) -> str:
    facts = [
        ("Team", esc(d["team"])),
        ("Priority", esc(d["priority"])),
        ("Schedule", esc(d["schedule"]) or '<span class="dim">once per version</span>'),
        ("Time zone", esc(d["timezone"]) or '<span class="dim">–</span>'),
        (
            "After",
            ", ".join(f'<a href="{esc(links.task(t))}">{esc(t)}</a>' for t in d["after"])
            or '<span class="dim">–</span>',
        ),
        ("Runs", f'<a href="{esc(links.runs({"task": d["id"]}))}">all runs of this task</a>'),
    ]
    if d["description"]:
        facts.insert(0, ("Description", esc(d["description"])))
    grid = "".join(f"<dt>{esc(k)}</dt><dd>{v}</dd>" for k, v in facts)
    versions = table(
        ("Machine", "Version now"),
        [
            [f'<a href="{esc(links.machine(m))}">{esc(m)}</a>', f"<code>{esc(v)}</code>"]
            for m, v in d["current_versions"].items()
        ],
        "It targets no machine.",
        "compact",
    )
    ran = table(
        ("Version", "Recent runs", "Latest"),
        [
            [
                f"<code>{esc(v['version'])}</code>",
                esc(v["runs"]),
                f'<a href="{esc(links.run(v["last_run"]))}">#{esc(v["last_run"])}</a>',
            ]
            for v in d["versions_run"]
        ],
        "It has not run yet.",
        "compact",
    )
    where = f"{d['file']}:{d['line']}" if d["file"] and d["line"] else (d["file"] or "")
    definition = (
        f'<p class="dim">{esc(where)}</p><pre class="definition">{esc(d["definition"])}</pre>'
        if d["definition"] is not None
        else '<p class="empty">The file it is defined in cannot be read here.</p>'
    )
    body = (
        f'<dl class="facts grid">{grid}</dl>\n'
        f'<section class="split"><div><h2>Versions</h2>{versions}</div>'
        f"<div><h2>Versions run</h2>{ran}</div></section>\n"
        "<h2>Latest run on each machine</h2>"
        + runs_table(d["latest_runs"], links, "No run yet.", with_error=True)
        + f"\n<h2>Definition</h2>{definition}"
    )
    return detail_page(f"Task {d['id']}", body, links, links.task(d["id"]))


def machine_page(d: dict, links: Links) -> str:
    labels = " ".join(
        f'<span class="label">{esc(k)}={esc(v)}</span>' for k, v in d["labels"].items()
    )
    where = d["host"] + (f":{d['port']}" if d["port"] else "") if d["host"] else None
    facts = [
        ("Team", esc(d["team"])),
        ("State", up_badge(d["up"])),
        ("Transport", esc(d["transport"]) + (f" <code>{esc(where)}</code>" if where else "")),
        (
            "Load",
            f"{esc(d['running'])} running of {esc(d['max_parallel'])}, {esc(d['pending'])} queued",
        ),
        ("Last seen", when(d["last_seen"])),
        ("Labels", labels or '<span class="dim">none</span>'),
        (
            "Tasks",
            ", ".join(f'<a href="{esc(links.task(t))}">{esc(t)}</a>' for t in d["tasks"])
            or '<span class="dim">none</span>',
        ),
    ]
    grid = "".join(f"<dt>{esc(k)}</dt><dd>{v}</dd>" for k, v in facts)
    body = (
        f'<dl class="facts grid">{grid}</dl>\n<h2>Recent runs '
        f'<a class="more" href="{esc(links.runs({"machine": d["name"]}))}">all</a></h2>'
        + runs_table(d["runs"], links, "No run on this machine yet.")
    )
    return detail_page(f"Machine {d['name']}", body, links, links.machine(d["name"]))


def detail_page(title: str, body: str, links: Links, href: str) -> str:
    """A page about one task or machine at `href`: outside the nav, with its JSON twin,
    refreshed live every few seconds."""
    return page(
        title,
        body,
        links,
        here="",
        json_link=None if links.static else json_href(href),
        refresh=10,
        live=' data-live="page" data-every="5"',
    )


def not_found_page(message: str, links: Links) -> str:
    return page(
        "Not found",
        f'<p class="empty">{esc(message)}</p>',
        links,
        here="",
        json_link=None,
        refresh=None,
    )
