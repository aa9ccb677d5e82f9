"""``prefork status`` and ``prefork ctl``: the client side of the control socket.

    prefork status [--json | --check] [--control-socket PATH | --pid PIDFILE]
    prefork ctl reload|stop [--no-wait] [--timeout S] [--control-socket PATH | --pid PIDFILE]
    prefork ctl workers +N|-N [--no-wait] [--timeout S] [--control-socket PATH | --pid PIDFILE]

A deploy script needs the outcome, not just "signal sent": ``ctl reload`` waits until the
reload is complete (exit 0) or abandoned (exit 1, with the arbiter's reason), and ``ctl
workers`` until that many workers of the serving generation are ready. ``--no-wait`` returns
as soon as the arbiter has queued the request (a signal's semantics). ``ctl stop`` returns at
once: the arbiter's exit is the outcome, and its supervisor sees it.

Finding the socket when no PATH is given mirrors the server's ``auto`` rules (control.py):
with ``--pid PIDFILE`` the first that exists of ``PIDFILE.ctl``, ``control.sock`` beside the
pidfile (the systemd RuntimeDirectory layout) and ``/tmp/prefork-PID.ctl``; else
``$RUNTIME_DIRECTORY/control.sock`` when systemd set it (``ExecReload=prefork ctl reload``);
else the one ``/tmp/prefork-PID.ctl`` of ours whose arbiter is alive — several is an error that
lists them, since guessing could reload the wrong server.

Every failure is one line on stderr and exit 1 (2 for a usage error), never a traceback.

``status --check`` is for exec probes and systemd's ``ExecStartPost=``: exit 0 when the arbiter
answers, is not stopping and has a worker accepting; else exit 1 with one line saying why.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final

from .control import FALLBACK_DIR, PIDFILE_SUFFIX, RUNTIME_SOCKET_NAME, fallback_path, fallback_sockets
from .pidfile import read_pidfile

#: Seconds to wait for the arbiter to accept, answer, or finish answering.
TIMEOUT: Final = 10.0
#: Default bound on waiting for an outcome: systemd's default TimeoutStartSec, which bounds
#: `systemctl reload` the same way. A new generation that takes longer to boot is still booting.
WAIT_TIMEOUT: Final = 90.0
#: How often the outcome is asked for while waiting.
POLL_INTERVAL: Final = 0.1
#: An answer larger than this is not from a prefork arbiter (a status of 10k workers is ~2 MB).
MAX_ANSWER: Final = 64 * 1024 * 1024
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
MIB: Final = 1024 * 1024


class CtlError(Exception):
    """One line for the operator."""


def main(argv: Sequence[str]) -> int:
    """``argv[0]`` is the subcommand ("status" or "ctl")."""
    args = _parser(argv[0]).parse_args(argv[1:])
    try:
        request = _request(args)
    except CtlError as exc:
        return _fail(str(exc), EXIT_USAGE)
    waits = argv[0] == "ctl" and args.action != "stop" and not args.no_wait
    try:
        path = args.control_socket or locate(args.pid, os.environ)
        before = ask(path, {"cmd": "status"}) if waits else {}
        answer = ask(path, request)
    except CtlError as exc:
        return _fail(str(exc), EXIT_FAILED)
    if not answer.get("ok"):
        return _fail(f"the arbiter refused: {answer.get('error', answer)}", EXIT_FAILED)
    if getattr(args, "check", False):
        return check(answer)
    if argv[0] == "ctl":
        count = f" x{answer['count']}" if answer.get("count", 1) > 1 else ""
        text = f"{args.action} requested ({answer.get('signal')}{count} queued)\n"
        if waits:
            try:
                ok, outcome = wait_for_outcome(path, request, before, args.timeout)
            except CtlError as exc:
                return _fail(str(exc), EXIT_FAILED)
            if not ok:
                return _fail(outcome, EXIT_FAILED)
            text += outcome + "\n"
    elif args.json:
        text = json.dumps(answer, indent=2) + "\n"
    else:
        text = format_status(answer)
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:  # `prefork status | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
    return 0


def _fail(message: str, code: int) -> int:
    print(f"prefork: error: {message}", file=sys.stderr)
    return code


def _parser(command: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"prefork {command}")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--control-socket", metavar="PATH", help="the arbiter's control socket")
    where.add_argument("--pid", metavar="PIDFILE", help="find the control socket from the server's --pid file")
    if command == "status":
        parser.description = "Show the arbiter and its workers."
        output = parser.add_mutually_exclusive_group()
        output.add_argument("--json", action="store_true", help="print the raw status as JSON")
        output.add_argument("--check", action="store_true",
                            help="exit 0 if the server accepts work, else 1 (for health probes)")
    else:
        parser.description = "Ask the arbiter to act, as the matching signal would."
        parser.add_argument("action", choices=("reload", "stop", "workers"),
                            help="reload (HUP), stop (TERM: graceful), workers +N|-N (TTIN/TTOU)")
        parser.add_argument("delta", nargs="?", help="for workers: +N or -N")
        parser.add_argument("--no-wait", action="store_true",
                            help="return once the arbiter has queued the request, without "
                                 "waiting for the reload or the workers")
        parser.add_argument("--timeout", type=_seconds, default=WAIT_TIMEOUT, metavar="SECONDS",
                            help=f"how long to wait for the outcome [default: {WAIT_TIMEOUT:.0f}]")
    return parser


#: Worker states in which a worker accepts connections (control.py reports these names).
ACCEPTING: Final = frozenset({"ready", "busy"})


def check(status: Mapping[str, Any]) -> int:
    """``status --check``: 0 when the server accepts work, else 1; one line either way."""
    accepting = sum(1 for w in status["workers"] if w["state"] in ACCEPTING)
    if status.get("stopping"):
        return _fail("not accepting work: the server is stopping", EXIT_FAILED)
    if not accepting:
        return _fail("not accepting work: no worker is ready", EXIT_FAILED)
    print(f"ok: {accepting} worker(s) accepting, generation {status['generation']}")
    return 0


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {text!r}")
    return value


def wait_for_outcome(path: str, request: dict[str, Any], before: dict[str, Any],
                     timeout: float) -> tuple[bool, str]:
    """Poll the arbiter's status until ``request`` has an outcome: (ok, the sentence to print).
    CtlError if the arbiter goes away or ``timeout`` passes first."""
    deadline = time.monotonic() + timeout
    while True:
        outcome = _outcome(request, before, ask(path, {"cmd": "status"}))
        if outcome is not None:
            return outcome
        if time.monotonic() >= deadline:
            raise CtlError(f"{request['cmd']}: no outcome within {timeout:g}s (it may still be in "
                           "progress: see `prefork status`)")
        time.sleep(POLL_INTERVAL)


def _outcome(request: dict[str, Any], before: dict[str, Any],
             status: dict[str, Any]) -> tuple[bool, str] | None:
    """The outcome ``status`` shows for ``request``, or None while it is still on its way."""
    if request["cmd"] == "reload":
        if "reloads" not in status:
            raise CtlError("this arbiter does not report reload outcomes (an older prefork); "
                           "use --no-wait")
        last = status["reloads"]["last"]
        finished = last is not None and last["number"] > before["reloads"]["started"]
        # A HUP that came in meanwhile supersedes ours: wait for the last one to end.
        if finished and status["reloading"] is None:
            return bool(last["ok"]), str(last["message"])
        return None
    wanted = max(1, before["workers_wanted"] + request["delta"])
    current = [w for w in status["workers"] if w["generation"] == status["generation"]]
    if status["workers_wanted"] == wanted and len(current) == wanted and \
            all(w["state"] in ACCEPTING for w in current):
        return True, f"{wanted} worker(s) serving"
    return None


def _request(args: argparse.Namespace) -> dict[str, Any]:
    if not hasattr(args, "action"):
        return {"cmd": "status"}
    if args.action != "workers":
        if args.delta is not None:
            raise CtlError(f"ctl {args.action}: unexpected argument {args.delta!r}")
        return {"cmd": args.action}
    text = args.delta or ""
    if text[:1] not in ("+", "-") or not text[1:].isdigit():
        raise CtlError(f"ctl workers: expected a change such as +1 or -2, got {text!r}")
    return {"cmd": "workers", "delta": int(text)}


def locate(pidfile: str | None, environ: Mapping[str, str], directory: str = FALLBACK_DIR) -> str:
    """The control socket to talk to when no --control-socket was given (module docstring)."""
    if pidfile:
        pid = read_pidfile(pidfile)
        candidates = [os.path.abspath(pidfile) + PIDFILE_SUFFIX,
                      os.path.join(os.path.dirname(os.path.abspath(pidfile)), RUNTIME_SOCKET_NAME)]
        if pid is not None:
            candidates.append(fallback_path(pid, directory))
        for candidate in candidates:
            if os.path.exists(candidate):
                return candidate
        raise CtlError(f"no control socket for {pidfile} (looked for {', '.join(candidates)})")
    runtime = environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    if runtime:
        return os.path.join(runtime, RUNTIME_SOCKET_NAME)
    found = [path for path, alive in fallback_sockets(directory) if alive]
    if len(found) == 1:
        return found[0]
    if not found:
        raise CtlError(f"no running prefork found (no control socket of yours in {directory}); "
                       "give --control-socket PATH or --pid PIDFILE")
    raise CtlError(f"several prefork servers are running ({', '.join(found)}); "
                   "choose one with --control-socket PATH or --pid PIDFILE")


def ask(path: str, request: dict[str, Any], timeout: float = TIMEOUT) -> dict[str, Any]:
    """Send one request line, return the answer object; CtlError says what went wrong."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except FileNotFoundError:
            raise CtlError(f"no control socket at {path} (is prefork running, without "
                           "--control-socket off?)") from None
        except PermissionError:
            raise CtlError(f"permission denied on {path} (run this as the user prefork runs as, "
                           "or as root)") from None
        except ConnectionRefusedError:
            raise CtlError(f"nothing listens on {path}: the arbiter is gone (a stale socket file)") from None
        except TimeoutError:
            raise CtlError(f"{path}: the arbiter did not accept within {timeout:.0f}s") from None
        except OSError as exc:
            raise CtlError(f"cannot connect to {path}: {exc.strerror or exc}") from None
        answer = bytearray()
        try:
            sock.sendall(json.dumps(request).encode() + b"\n")
            while b"\n" not in answer and len(answer) <= MAX_ANSWER:
                data = sock.recv(256 * 1024)
                if not data:
                    break
                answer += data
        except TimeoutError:
            raise CtlError(f"{path}: no answer within {timeout:.0f}s") from None
        except OSError as exc:
            raise CtlError(f"{path}: the connection failed: {exc.strerror or exc}") from None
    line, newline, _ = bytes(answer).partition(b"\n")
    if not newline:
        raise CtlError(f"{path}: the arbiter closed the connection without answering")
    try:
        decoded = json.loads(line)
    except ValueError:
        raise CtlError(f"{path}: not an answer from prefork: {line[:80]!r}") from None
    if not isinstance(decoded, dict):
        raise CtlError(f"{path}: not an answer from prefork: {line[:80]!r}")
    return decoded


# -- the status table -----------------------------------------------------------------------------

COLUMNS: Final = ("PID", "#", "GEN", "STATE", "REQUESTS", "IN REQUEST", "H/B/W/IDLE/CL", "BUFFERED", "RSS",
                  "CPU%", "AGE")
LEFT_ALIGNED: Final = frozenset({"STATE"})


def format_status(status: Mapping[str, Any]) -> str:
    workers = status["workers"]
    lines = [f"arbiter {status['pid']} [{status['name']}], prefork {status['version']}: "
             f"up {duration(status['uptime'])}, generation {status['generation']}, "
             f"{len(workers)} worker(s), {status['workers_wanted']} wanted"]
    if status.get("reloading") is not None:
        lines.append(f"reloading: generation {status['reloading']} is booting")
    if status.get("stopping"):
        lines.append("stopping: health checks fail; workers serve out --shutdown-delay, then drain")
    rows = [COLUMNS] + [(
        str(w["pid"]), str(w["number"]), str(w["generation"]), w["state"], str(w["requests"]),
        "-" if w["request_age"] is None else duration(w["request_age"]),
        connections(w.get("connections")),
        "?" if w.get("buffered") is None else f"{w['buffered'] / MIB:.1f}M",
        "?" if w["rss"] is None else f"{w['rss'] / MIB:.1f}M",
        "?" if w["cpu_percent"] is None else f"{w['cpu_percent']:.1f}",
        duration(w["age"]),
    ) for w in workers]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    for row in rows:
        cells = [cell.ljust(width) if name in LEFT_ALIGNED else cell.rjust(width)
                 for name, cell, width in zip(COLUMNS, row, widths)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def connections(states: Mapping[str, int] | None) -> str:
    """A worker's connections by state: reading a head, a body, writing, idle keep-alive,
    closing (lingering after an early answer)."""
    if states is None:  # an arbiter from before these gauges
        return "?"
    # (an arbiter from before the closing gauge has none: 0)
    return "/".join(str(states.get(state, 0)) for state in ("head", "body", "write", "idle", "closing"))


def duration(seconds: float) -> str:
    """12.3s, 4m05s, 3h02m, 2d04h: short and exact enough to spot a stuck request."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"
