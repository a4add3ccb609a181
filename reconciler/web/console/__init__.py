"""The read-only web console: pages of the queue, the runs, the tasks and the machines, each
with a JSON twin, served by `reconcile serve` and the daemon's listener, or written as static
files by `reconcile status --format html -o DIR`.

`pages` computes each page's data from store reads (the JSON of `reconcile status` and
`queue show`); `html` renders it; `app` routes a request to them (GET and HEAD only: no page
changes state); `site` writes the pages as files.
"""
