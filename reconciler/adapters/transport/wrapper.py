"""The POSIX sh that runs a task on the target, and the one that stops or reads it later.

The remote command line of a run is fixed text, `set -- DIR RUN_ID NONCE ATTEMPT DIGEST` and
`RUN`, run by the target's login shell itself (POSIX, docs/transports.md): sshd starts that
shell with `-c LINE`, and an `sh -c '<RUN>'` in LINE would exec one more shell per run (~0.8 ms
of the target's CPU, as much as a whole `echo ok` costs besides sshd). None of it is secret.
(`CTL` and `CLEAN`, a few per connection, still go through `sh -c`; `RUN` is sent without its
comments and indentation, which the shell would parse at every run.) The environment and the
command arrive on stdin as shell assignments quoted with `shlex.quote` (byte for byte, newlines
included), terminated by a line holding only the nonce, after a first line `# COUNT TOKEN`:
the byte count of the rest, which bash reads with one `read -N` instead of a read(2) per byte,
and the invocation's token, a random value that only the wrapper and the reconciler know. The wrapper evaluates them in a subshell, so `export PATH=...` or
`IFS=...` in a task's env cannot disturb the wrapper itself, and then `exec /bin/sh -c "$cmd"`.
Only shell builtins see the values: no process's argument list ever holds one.

Markers, two flat files per run under DIR (`~/` means the remote home):
- `<id>.meta`  `NONCE ATTEMPT DIGEST PGID`: which invocation the output belongs to (a run's
  check and command, and each attempt, share the run id; the nonce tells them apart; the
  digest is of the command and of the run as its store knows it, `digest`, so a reconciler
  with another store, sharing the target account, never adopts the result as its own) and the
  process group of the wrapper and the task (what a timeout kills); once the task ended, a
  line `NONCE CODE` is appended (two files per run, not four: creating a file, an inode and
  a directory entry, is what the markers cost a run on the target). The first line, padded
  to 63 characters, is written over an earlier invocation's, not after truncating the file
  (see `RUN`): that invocation's exit line may follow it, and counts for nothing, its nonce
  being another;
- `<id>.out`   the task's stdout and stderr, as a file: the task never writes to the SSH channel,
  so a lost connection neither blocks nor kills it (no SIGPIPE), and it runs to its end.
Markers of earlier versions (`.meta` without PGID, beside `<id>.pid` and `<id>.exit NONCE
CODE`) are still read, so runs started before an upgrade are stopped; their digests have no run
key, so a reconciler that checks keys (`reap`'s `key`, as the engine asks) does not adopt
their results (it cannot tell its own from another store's): such a run stays `unknown`.
`CLEAN` removes the markers a day old, but never those of a run still going on (its process
group lives, led by the wrapper of its nonce): a kill finds a run by its meta, however long it
has been running.

When the task ended the wrapper prints the output tail, then a trailer line `TOKEN CODE`, and
waits for the reconciler to echo the token back on stdin. The token, not the nonce: the nonce is
no secret (the argument list, the markers, and the task's RECONCILE_RUN_COOKIE hold it), and a
task whose last line is its cookie and a number would otherwise end the reply itself, with that
number for its exit code. The token is in no argument list, no file and no environment: the
task cannot print it. Only that acknowledgement (the
reconciler recorded the run's end) empties `<id>.out` (the file goes with the day-old
markers), so the task's output, which may hold a secret, does not stay on the target. Any
other line (`REFUSAL`: the end was not recorded) or a lost connection leaves it for the next
pass to adopt.

Nothing here waits for the end of its input: the run reads up to its terminator, then one
acknowledgement line; `CTL` and `CLEAN` read nothing (stdin is /dev/null). So the reconciler
never half-closes a channel (SSH EOF): paramiko builds that EOF under the channel's lock but
sends it outside, so when the remote side has just exited, paramiko's own CLOSE reply can
overtake it; sshd then gets an EOF for a channel it already freed ("ieof packet referred to
nonexistent channel") and drops the whole connection, with every run on it.

`CTL` reads these for a run: its exit code and output tail if it finished, else it kills the
process group (verified to be the wrapper of that nonce, so a recycled pid is never hit). With
`keep` it leaves `<id>.out` in place: the caller has read the output but not recorded it yet,
and a reconciler killed before it did leaves it for the next pass to adopt; the caller removes
it with `forget` (for that nonce only) once the run's result is durable. With `drop` (a caller
that never records later) it removes `<id>.out` having printed the tail.
"""

from __future__ import annotations

import functools
import hashlib
import secrets
import shlex
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from reconciler.core.output import tail_text

OUTPUT_TAIL = 64 * 1024
DEFAULT_MARKERS = "~/.cache/reconciler/runs"
# Exit codes of the wrapper itself (the task's own codes pass through unchanged).
INPUT_CUT = 125  # stdin ended before the terminator: the command was not started
NO_MARKERS = 124  # the marker directory cannot be written: the command was not started

_PREAMBLE = r"""
d=$1; case $d in "~/"*) d=$HOME/${d#"~/"};; esac
f=$d/$2
tail_out() {  # the output's last 64 KiB, under the mark of what was dropped (reconciler/output.py)
  z=$(($(wc -c 2>/dev/null < "$f.out" || echo 0) + 0))
  [ "$z" -gt 65536 ] && printf '[... %s bytes of earlier output dropped ...]\n' $((z - 65536))
  tail -c 65536 "$f.out" 2>/dev/null
}
"""

# Whether process group $pg lives and is the wrapper's of nonce $n (`CTL`, `CLEAN`).
_LIVE = r"""
alive() {  # a member of the group that is not a zombie (a zombie leader keeps kill -0 true)
  [ -d /proc/self ] || { kill -s 0 -- "-$pg" 2>/dev/null; return; }
  for s in /proc/[0-9]*/stat; do
    IFS= read -r l 2>/dev/null < "$s" || continue
    set -- ${l##*) }
    [ "$3" = "$pg" ] && [ "$1" != Z ] && return 0
  done
  return 1
}
live() {
  [ -n "$pg" ] && [ -n "$n" ] && kill -s 0 -- "-$pg" 2>/dev/null && alive || return 1
  # A live leader must be this run's: it started when the runner's markers say (their fifth
  # field), or it is the wrapper (its argv holds the nonce). A recycled pid is never taken for
  # it. A dead or zombie leader cannot have been recycled while its group lives.
  st=; IFS= read -r st 2>/dev/null < "/proc/$pg/stat"
  case ${st##*) } in
    Z*|'') return 0 ;;
  esac
  if [ -n "${ps-}" ]; then set -- ${st##*) }; [ "${20-}" = "$ps" ]; return; fi
  tr '\000' '\n' 2>/dev/null < "/proc/$pg/cmdline" | grep -qF -- "$n"
}
"""

RUN = (
    _PREAMBLE
    + r"""exec 2>/dev/null  # the channel carries stderr into the reply: the wrapper's own notes go to stdout
# Its markers and output file are private; the task gets the login's umask back (`um`), as
# `ssh host command` would give it.
um=$(umask); umask 077
pg=$$
# sshd starts the login shell, this shell, as a session leader, so the group is usually
# ours: a group with our pid exists only if we lead it (one signal-0 syscall, not a read of
# /proc/$$/stat a byte at a time). Otherwise /proc says which group we are in.
if ! kill -s 0 -- "-$$" && IFS= read -r st < /proc/$$/stat; then
  set -- "$1" "$2" "$3" "$4" "$5" ${st##*) }; pg=$8  # after "pid (comm) ": state ppid pgrp
fi
nl='
'
# The input's first line, `# COUNT TOKEN`: the token ends the reply and acknowledges it (a
# variable of this shell only: no argument list, file or environment holds it). bash reads a
# pipe a byte per read(2), except for `read -N COUNT` (bash 4.1 on), which reads its count in
# one (counted in bytes: LC_ALL=C). Other shells read line by line to the terminator.
b=; case ${BASH_VERSION-} in [5-9].*|4.[1-9]*|[1-9][0-9].*) b=1 ;; esac
t=; s=; IFS=' ' read -r h n t
if [ -n "$b" ]; then
  [ -z "$t" ] || LC_ALL=C IFS= read -r -N "$n" s
else
  while IFS= read -r l; do s=$s$l$nl; [ "$l" = "$3" ] && break; done
fi
case $t/$s in
  ?*/*"$nl$3$nl") ;;
  *) echo "reconciler: input cut off; the command was not started"; exit 125 ;;
esac
# The first line is written over the one an earlier invocation of the run id left (`<>`, at a
# fixed width), not after truncating the file: on ext4, truncating frees the file's block (a
# synchronous discard where the disk has it) and writes the file back when it is closed.
if ! command exec 4<> "$f.meta"; then
  mkdir -p "$d"; command exec 4<> "$f.meta" || {
    echo "reconciler: cannot write run markers in $d"; exit 124; }
fi
printf '%-63s\n' "$3 $4 $5 $pg" >&4 || {
  echo "reconciler: cannot write run markers in $d"; exit 124; }
exec 4>&-
# An empty output file (an acknowledged run's) is opened for appending, not truncated: on ext4
# a file truncated to nothing is written back when closed (its auto_da_alloc), which would
# cost the target a block allocation and a disk write per run for output the acknowledgement
# empties a moment later anyway.
if [ -s "$f.out" ]; then command exec 3> "$f.out"; else command exec 3>> "$f.out"; fi || {
  echo "reconciler: cannot write run markers in $d"; exit 124; }
# The command gets a shell of its own (exec, not eval in this subshell): its `$$` and `$PPID`
# are what `sh -c` gives, so `kill $$` stops the command, not its wrapper.
# Every process of the task carries the nonce as RECONCILE_RUN_COOKIE (set after the task's
# env, which cannot change it): a kill finds by it what left the group (`setsid`).
( umask "$um"; eval "${s%"$3$nl"}"; RECONCILE_RUN_COOKIE=$3; export RECONCILE_RUN_COOKIE
  exec /bin/sh -c "$_reconciler_command" ) >&3 2>&1 3>&- < /dev/null
rc=$?
# From here on lengths are bytes (the task, which may use the locale, has ended).
LC_ALL=C
# How much the task wrote: the offset of the output's file description, read from /proc by a
# builtin, so no `wc` process per run (empty without /proc: then tail_out counts).
IFS=' 	' read -r k z < /proc/$$/fdinfo/3 && [ "$k" = pos: ] || z=
exec 3>&-
echo "$3 $rc" >> "$f.meta"  # appended: after whatever an earlier invocation left
o=
# A short output is read by builtins, sparing a `tail` process (bash: the whole tail, in one
# read(2); others: 1 KiB, read a byte per read(2)); it is used only when it has every byte (a
# NUL falls back to tail).
case $z in
  [1-9]*) if [ -n "$b" ] && [ "$z" -le 65536 ]; then
            IFS= read -r -N "$z" o < "$f.out"
          elif [ "$z" -le 1024 ]; then
            while IFS= read -r l; do o=$o$l$nl; done < "$f.out"; o=$o$l
          fi
          [ "${#o}" -eq "$z" ] || o= ;;
esac
case $z in
  '') if [ -s "$f.out" ]; then tail_out; fi ;;
  0) ;;
  *) if [ -z "$o" ]; then
       [ "$z" -gt 65536 ] && printf '[... %s bytes of earlier output dropped ...]\n' $((z - 65536))
       tail -c 65536 "$f.out"
     fi ;;
esac
# A short output and the trailer in one write: one SSH packet to send and to read, not two.
printf '%s%s %s\n' "$o" "$t" "$rc"
if IFS= read -r ack && [ "$ack" = "$t" ]; then : > "$f.out"; fi  # a builtin: no fork
exit $rc
"""
)

# $3: reap | kill | peek (peek leaves a live run alone: `running NONCE ATTEMPT DIGEST`) |
# forget (removes the output of nonce $4 only: `forgot`).
# $4: the nonce the caller expects (`-` for any). $5: keep | drop, whether the output stays
# after it was printed (absent: drop). $6: how long a kill waits between TERM and KILL, in
# tenths of a second (absent: 20). $7: the digests the markers must hold (comma-separated;
# absent: any): markers of another run (another store's run of the same id, on a shared
# account) are neither stopped nor read nor removed: `foreign NONCE ATTEMPT DIGEST`.
# Prints one header line: `exit CODE NONCE ATTEMPT DIGEST` + the output tail,
# `killed|gone NONCE ATTEMPT DIGEST` (+ the tail), `foreign ...` or `none`.
CTL = (
    _PREAMBLE
    + _LIVE
    + r"""exec < /dev/null
# The exit line is the one with the first line's nonce (lines of earlier invocations of the
# run id may follow the first); it counts only whole (with its newline): a wrapper may be
# appending it.
n=; en=
{ if read -r n a h pg ps rest; then
    while read -r e c; do [ "$e" = "$n" ] && en=$e rc=$c && break; done
  else n=; fi; } 2>/dev/null < "$f.meta"
[ -n "$n" ] || { echo none; exit 0; }
if [ "$4" != - ] && [ "$4" != "$n" ]; then echo none; exit 0; fi
case ,${7:-$h}, in *",$h,"*) ;; *) echo "foreign $n $a $h"; exit 0 ;; esac
if [ "$3" = forget ]; then rm -f "$f.out"; echo forgot; exit 0; fi
keep=$5
done_out() { tail_out; [ "$keep" = keep ] || rm -f "$f.out"; }
[ -n "$en" ] || read -r en rc 2>/dev/null < "$f.exit" || en=  # markers of earlier versions
if [ -n "$en" ] && [ "$en" = "$n" ]; then
  echo "exit $rc $n $a $h"; done_out; exit 0
fi
[ -n "$pg" ] || read -r pg 2>/dev/null < "$f.pid" || pg=
if ! live; then
  echo "gone $n $a $h"; done_out; exit 0
fi
if [ "$3" = peek ]; then echo "running $n $a $h"; exit 0; fi
# The processes that left the group (a `setsid` daemon) but carry the run's cookie in their
# environment get the same signals (Linux /proc; elsewhere, or once cleared, they escape).
strays() {
  c=
  [ -d /proc/self ] || return 0
  for e in /proc/[0-9]*/environ; do
    tr '\000' '\n' 2>/dev/null < "$e" | grep -qx "RECONCILE_RUN_COOKIE=$n" || continue
    e=${e#/proc/}; c="$c ${e%/environ}"
  done
}
strays
kill -s TERM -- "-$pg" 2>/dev/null
[ -z "$c" ] || kill -s TERM $c 2>/dev/null
i=0
while alive && [ $i -lt "${6:-20}" ]; do
  sleep 0.1 2>/dev/null || sleep 1; i=$((i+1))
done
kill -s KILL -- "-$pg" 2>/dev/null
strays
[ -z "$c" ] || kill -s KILL $c 2>/dev/null
echo "killed $n $a $h"; done_out
"""
)

# The output a running task wrote from byte $4 of `<id>.out` on (issue 16 §1), if the
# markers are of nonce $3: a first line with the offset the bytes start at (later than $4
# when more than 64 KiB were written since: the rest was skipped), then the bytes. Nothing
# at all when the markers are another invocation's.
READ = (
    _PREAMBLE
    + r"""exec < /dev/null
{ read -r n rest; } 2>/dev/null < "$f.meta" || exit 0
[ "$n" = "$3" ] || exit 0
z=$(($(wc -c 2>/dev/null < "$f.out" || echo 0) + 0))
o=$4
[ $((z - o)) -gt 65536 ] && o=$((z - 65536))
echo "$o"
[ "$z" -gt "$o" ] && tail -c +$((o + 1)) "$f.out" 2>/dev/null | head -c $((z - o))
exit 0
"""
)

# Removes markers older than a day, and large outputs untouched for an hour, except those of
# a run still going on (its process group lives, led by its wrapper): a run may last longer
# than a day, and without its meta nothing could stop it (a kill, a timeout, a reap).
CLEAN = (
    _PREAMBLE
    + _LIVE
    + r"""exec < /dev/null
[ -d "$d" ] || exit 0
find "$d" -maxdepth 1 -type f \( -mtime +0 -o \( -name '*.out' -size +1024k -mmin +60 \) \) \
  2>/dev/null | while IFS= read -r p; do
  r=${p%.*}; n=; pg=; ps=
  { read -r n a h pg ps rest; } 2>/dev/null < "$r.meta"
  [ -n "$pg" ] || read -r pg 2>/dev/null < "$r.pid" || pg=  # markers of earlier versions
  live || rm -f "$p"
done
exit 0
"""
)


# A runner: one bash per SSH channel that runs the runs sent to it, one at a time, for as long as
# its channel lives (`ssh.SshTransport`): sshd's session and the login shell, most of what a
# run costs the target besides its own command, are paid once per channel instead of once per
# run. It needs bash 4.1 (`read -N`, `declare -A`) and Linux's /proc; without them it says so
# (`reconciler-runner 0`) and the transport falls back to `RUN`, one channel per run.
#
# It reads messages from its stdin, each a line `KIND ID ...` padded to `MESSAGE` bytes (bash
# reads a line from a pipe a byte per read(2); a count of bytes, in one):
# - `R ID NONCE ATTEMPT DIGEST COUNT TOKEN`, then COUNT bytes, the input `RUN` reads after its
#   first line: run it. The markers are `RUN`'s, its first meta line with one more field, the
#   start time of the group's leader (/proc/PID/stat), which tells it from a recycled pid (the
#   leader is the task's own `sh`, whose argument list is the task's). The task runs in a
#   process group of its own (job control for the one fork), so a kill of its group spares the
#   runner. The reply is `RUN`'s: the output, then `TOKEN CODE`.
# - `A ID TOKEN`: the end of run ID is recorded: empty its output file, unless another
#   invocation of ID (a retry, on another channel) has taken the markers over meanwhile.
# - `N ID`: forget run ID's output without emptying it (its end was not recorded: a later
#   pass adopts it).
# - anything else (`Q`), or the end of its input: exit. A task still running goes on alone.
# Acknowledgements wait in the pipe while a run goes on, and are read before the next one.
RUNNER = (
    _PREAMBLE
    + r"""exec 2>/dev/null
set +euC
um=$(umask); umask 077  # the runner's files are private; each task gets the login's back
if [ "${BASH_VERSINFO[0]:-0}" -lt 4 ] || [ ! -r /proc/self/stat ] ||
   { [ "${BASH_VERSINFO[0]}" -eq 4 ] && [ "${BASH_VERSINFO[1]}" -lt 1 ]; }; then
  echo "reconciler-runner 0"; exit 0
fi
nl='
'
declare -A held  # run id -> "TOKEN NONCE" of an output that waits for its acknowledgement
reply() {  # the output (bytes, not characters: LC_ALL=C here only) and the trailer
  local LC_ALL=C o=
  case $z in
    [1-9]*) if [ "$z" -le 65536 ]; then
              IFS= read -r -N "$z" o < "$f.out"; [ "${#o}" -eq "$z" ] || o=
            fi ;;
  esac
  if [ -n "$o" ] || [ "$z" = 0 ]; then printf '%s%s %s\n' "$o" "$t" "$rc"; return; fi
  tail_out
  printf '%s %s\n' "$t" "$rc"
}
echo "reconciler-runner 1"
while LC_ALL=C IFS= read -r -N 192 m; do  # one read(2), not one per byte (see MESSAGE)
  set -- $m; k=${1-} i=${2-} n=${3-} a=${4-} h=${5-} c=${6-} t=${7-}
  case $i in ''|*[!0-9]*) exit 0 ;; esac
  f=$d/$i
  case $k in
    A) set -- ${held[$i]-}
       if [ -n "${1-}" ] && [ "$1" = "$n" ]; then
         unset "held[$i]"
         m=; IFS=' ' read -r m r < "$f.meta"; [ "$m" = "$2" ] && : > "$f.out"
       fi
       continue ;;
    N) unset "held[$i]"; continue ;;
    R) ;;
    *) exit 0 ;;
  esac
  case $c in ''|*[!0-9]*) exit 0 ;; esac
  unable=
  if ! command exec 4<> "$f.meta"; then
    mkdir -p "$d"; command exec 4<> "$f.meta" || unable=1
  fi
  if [ -z "$unable" ]; then
    if [ -s "$f.out" ]; then command exec 3> "$f.out"; else command exec 3>> "$f.out"; fi ||
      { unable=1; exec 4>&-; }
  fi
  if [ -n "$unable" ]; then  # its input is read (and dropped) by a process of its own
    ( LC_ALL=C IFS= read -r -N "$c" s )
    printf 'reconciler: cannot write run markers in %s\n%s 124\n' "$d" "$t"; continue
  fi
  # The run's input (its env: secrets) is read by the fork that becomes the task, never by
  # the runner: no idle runner's memory keeps a secret. Job control is on for this fork
  # only: a process group of its own (its stdin stays the channel), and `wait` waits through
  # a SIGSTOP.
  set -m
  ( IFS= read -r st < /proc/self/stat; set -- ${st##*) }
    LC_ALL=C IFS= read -r -N "$c" s
    exec < /dev/null
    case $s in
      *"$nl$n$nl") ;;
      *) echo "reconciler: input cut off; the command was not started"; exit 125 ;;
    esac
    printf '%-95s\n' "$n $a $h $3 ${20}" >&4 || {
      echo "reconciler: cannot write run markers in $d"; exit 124; }
    exec 4>&-
    umask "$um"  # before the task's env, which may name `um`
    unset held  # the runner's own array: the task's env may name it
    set -- "$n"  # the task's env may name any variable, not a positional one
    eval "${s%"$n$nl"}"; RECONCILE_RUN_COOKIE=$1; export RECONCILE_RUN_COOKIE
    exec /bin/sh -c "$_reconciler_command" ) >&3 2>&1 3>&- &
  set +m
  exec 4>&-
  wait $!; rc=$?
  # A task that stopped before this wait began (its own SIGSTOP) makes `wait` return
  # 128+SIGSTOP while it lives on: wait on (a while between looks) until it is gone.
  while [ "$rc" -gt 128 ] && kill -s 0 "$!" 2>/dev/null; do
    sleep 0.2 2>/dev/null || sleep 1
    wait $!; rc=$?
  done
  IFS=' 	' read -r k z < /proc/$$/fdinfo/3 && [ "$k" = pos: ] || z=
  exec 3>&-
  echo "$n $rc" >> "$f.meta"
  reply
  held[$i]="$t $n"
done
exit 0
"""
)


def runner_line(markers: str) -> str:
    """The remote command that starts a runner keeping its markers under `markers`."""
    # --norc: bash started by sshd reads ~/.bashrc otherwise (a `set -o noclobber` there, an
    # alias, an echo), whatever the login shell; the login shell's own startup files ran.
    return (
        f"exec bash --norc -c {_quoted(_compact(RUNNER))} reconciler-runner {shlex.quote(markers)}"
    )


RUNNER_READY = b"reconciler-runner 1\n"
RUNNER_UNABLE = b"reconciler-runner 0\n"


MESSAGE = 192  # bytes of every message to a runner (the `R` header before its input)


def _message(*words: object) -> bytes:
    """A message to a runner: its words on one line padded to `MESSAGE` bytes."""
    line = " ".join(map(str, words)).encode()
    if len(line) >= MESSAGE:
        raise ValueError(f"a runner message is {len(line)} bytes, over {MESSAGE - 1}")
    return line.ljust(MESSAGE - 1) + b"\n"


def acknowledged(run_id: int, token: str) -> bytes:
    """What tells a runner that run `run_id`'s end is recorded (its output may go)."""
    return _message("A", run_id, token)


def let_go(run_id: int) -> bytes:
    """What tells a runner that run `run_id`'s end was not recorded (its output stays)."""
    return _message("N", run_id)


RUNNER_QUIT = _message("Q", 0)


@dataclass(frozen=True)
class Invocation:
    """One wrapper run: the remote command line (no secret) and its stdin (env + command),
    or the same run as a request to a runner (`RUNNER`: its header line and that input)."""

    command_line: str
    stdin: bytes
    nonce: str  # names the invocation in its markers; no secret (the task's cookie)
    token: str  # ends its reply and acknowledges it; on stdin only, never shown to the task
    request: bytes  # what a runner reads for this run
    run_id: int


def digest(command: str, key: str = "") -> str:
    """A short hash of a command and of the run's `key` (`base.run_key`: its id and when its
    store created it), so a marker is matched to the command it ran for that run of that
    store only: another store's run of the same id and command has another."""
    keyed = f"{key}\n{command}" if key else command  # no key: as earlier versions wrote it
    return hashlib.sha256(keyed.encode()).hexdigest()[:16]


def invocation(
    markers: str, run_id: int, command: str, env: Mapping[str, str], key: str = ""
) -> Invocation:
    """The wrapper call for `command` with `env` (plain values, revealed at the last moment),
    for the run whose `base.run_key` is `key`."""
    for name, value in env.items():
        if not name.isidentifier() or not name.isascii():
            raise ValueError(f"environment variable name {name!r} is not a shell name")
        if "\0" in value:
            raise ValueError(f"environment variable {name} holds a NUL byte")
    nonce = secrets.token_hex(16)
    lines = [f"export {name}={shlex.quote(value)}" for name, value in env.items()]
    lines.append(f"_reconciler_command={shlex.quote(command)}")
    script = "\n".join(lines) + "\n"
    while f"\n{nonce}\n" in f"\n{script}":  # the terminator may not occur inside a value
        nonce = secrets.token_hex(16)
    body = (script + nonce + "\n").encode()
    attempt = env.get("RECONCILE_ATTEMPT", "0")
    args = (
        markers,
        str(run_id),
        nonce,
        attempt if attempt.isdigit() else "0",
        digest(command, key),
    )
    line = _IN_LOGIN_SHELL + " ".join(map(shlex.quote, args)) + "\n" + _RUN_SENT
    # `# COUNT TOKEN` first: the byte count of the rest, for a shell that can read it in one
    # go, and the token of the reply's trailer (see `RUN`).
    token = secrets.token_hex(16)
    first = b"# %d %s\n" % (len(body), token.encode())
    header = _message("R", *args[1:], len(body), token)
    return Invocation(line, first + body, nonce, token, header + body, run_id)


def _compact(script: str) -> str:
    """`script` as sent: without its comments and indentation, which the login shell would
    otherwise parse at every run (a trailing comment starts with two spaces and `# `)."""
    kept = []
    for line in script.split("\n"):
        code = line.split("  # ", 1)[0].strip()
        if code and not code.startswith("#"):
            kept.append(code)
    return "\n".join(kept) + "\n"


_RUN_SENT = _compact(RUN)

# What makes the login shell run `RUN` as `sh` would (its arguments follow `set --`): zsh
# in its sh emulation (word splitting), and no `set -e`/`-u`/`-C` (noclobber) a shell startup file may have
# turned on. The task's own command still gets a `/bin/sh -c` of its own (see `RUN`).
_IN_LOGIN_SHELL = '[ -z "${ZSH_VERSION-}" ] || emulate sh; set +euC; set -- '


def ctl_line(
    markers: str,
    run_id: int,
    action: str,
    nonce: str = "-",
    *,
    keep: bool = False,
    grace: float | None = None,
    digests: Collection[str] = (),
) -> str:
    """The remote command that reaps (`reap`), stops (`kill`) or reads (`peek`) run `run_id`,
    or removes its output (`forget`, for `nonce` only). With `keep` the output read stays on
    the target until a `forget`. `grace`: seconds between TERM and KILL (default 2). With
    `digests`, markers holding none of them are another run's: left alone (`foreign`)."""
    extra = [] if grace is None else [str(max(0, round(grace * 10)))]
    if digests:
        extra = [extra[0] if extra else "20", ",".join(digests)]
    return _line(
        CTL,
        "reconciler-ctl",
        markers,
        str(run_id),
        action,
        nonce,
        "keep" if keep else "drop",
        *extra,
    )


def read_line(markers: str, run_id: int, nonce: str, offset: int) -> str:
    """The remote command that prints what run `run_id`'s invocation `nonce` wrote from
    byte `offset` on (see `READ`)."""
    return _line(READ, "reconciler-read", markers, str(run_id), nonce, str(offset))


def parse_read(raw: bytes) -> tuple[int, bytes] | None:
    """Pure: `READ`'s output as (the offset its bytes start at, the bytes); None when it
    printed nothing readable (the markers are another invocation's, or gone)."""
    header, newline, data = raw.partition(b"\n")
    if not newline or not header.isdigit():
        return None
    return int(header), data


def clean_line(markers: str) -> str:
    """The remote command that removes stale markers."""
    return _line(CLEAN, "reconciler-clean", markers, "0")


def _line(script: str, name: str, *args: str) -> str:
    return " ".join(["sh", "-c", _quoted(script), name, *map(shlex.quote, args)])


@functools.cache
def _quoted(script: str) -> str:
    """A fixed script (`RUN`, `CTL`, `CLEAN`) quoted once, not at every run."""
    return shlex.quote(script)


@dataclass(frozen=True)
class Marker:
    """What the markers of a run say: `state` is exit | killed | gone | running | foreign (another
    run's markers, left alone) | none."""

    state: str
    exit_code: int | None = None
    nonce: str | None = None
    attempt: int | None = None
    digest: str | None = None
    output: str = ""


def parse_reply(data: bytes, token: str) -> tuple[bytes, int] | None:
    """Pure: the output and exit code of a wrapper's reply that ends with its trailer line
    (`TOKEN CODE`, the invocation's token), or None while (or if) it does not end with one."""
    if not data.endswith(b"\n"):
        return None
    head, found, rest = data[:-1].rpartition(token.encode())
    code = rest.strip()
    if not found or not rest.startswith(b" ") or not code.isdigit():
        return None
    return head, int(code)


def acknowledgement(token: str) -> bytes:
    """What the reconciler sends once it holds a run's whole output (the invocation's token):
    the wrapper then empties the output file."""
    return f"{token}\n".encode()


# What lets a wrapper go without its acknowledgement: any line but its token (hex). It exits
# and keeps the output file, for a later pass to adopt.
REFUSAL = b"-\n"


def parse_ctl(raw: bytes) -> Marker:
    """Pure: the output of `CTL` as a `Marker` (`none` for anything unreadable)."""
    header, _, rest = raw.partition(b"\n")
    words = header.decode("utf-8", "replace").split()
    output = tail_text(rest, OUTPUT_TAIL)  # keeps the mark the script put before the tail
    if words[:1] == ["exit"] and len(words) == 5 and _int(words[1]) is not None:
        return Marker("exit", _int(words[1]), words[2], _int(words[3]), words[4], output)
    if words[:1] in (["killed"], ["gone"], ["running"], ["foreign"]) and len(words) == 4:
        return Marker(words[0], None, words[1], _int(words[2]), words[3], output)
    return Marker("none")


def _int(text: str) -> int | None:
    return int(text) if text.isdigit() else None
