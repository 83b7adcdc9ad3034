"""sentry: from the child's death to the supervisor's exit, with a crash event delivered.

A minimal Sentry receiver runs in the bench on 127.0.0.1 and answers 200 to
``POST /api/<id>/envelope/``; the supervisor gets ``--sentry-dsn
http://public@127.0.0.1:PORT/1``. The child prints CLOCK_MONOTONIC and then
dies of an uncaught exception; the bench sees the supervisor's exit through a
pidfd. This includes importing sentry_sdk, which the supervisor does only now.
Compared with the same crash without a DSN, and under tini.
"""

from __future__ import annotations

import os
import subprocess
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional

from common import (
    LOCALHOST,
    PYTHON,
    Budget,
    Context,
    Row,
    Verdict,
    exit_time,
    judge,
    median,
    ms,
    p90,
    read_ns,
    spawn,
    unavailable,
    unknown_option,
)

NAME = "sentry: child death to exit"
TARGET_S = 0.6
TARGET = "<= 0.6 s"
# The stamp is the child's last act before the traceback that ends it.
CRASH = [
    PYTHON, "-c",
    "import os, time\n"
    "os.write(1, b'%d\\n' % time.monotonic_ns())\n"
    "raise RuntimeError('the bench crashed on purpose')\n",
]
MAX_BODY = 16 << 20


class _Receiver(BaseHTTPRequestHandler):
    """Accepts envelopes and counts them; never inspects them (the tests do)."""

    received = 0
    lock = threading.Lock()

    def do_POST(self) -> None:
        length = min(int(self.headers.get("Content-Length") or 0), MAX_BODY)
        self.rfile.read(length)
        if self.path.startswith("/api/") and self.path.rstrip("/").endswith("envelope"):
            with _Receiver.lock:
                _Receiver.received += 1
            body = f'{{"id":"{uuid.uuid4().hex}"}}'.encode()
            self.send_response(200)
        else:
            body = b"{}"
            self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        del format, args  # quiet: the table is the output


@contextmanager
def _receiver() -> Iterator[int]:
    server = ThreadingHTTPServer((LOCALHOST, 0), _Receiver)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def run(ctx: Context) -> list[Row]:
    if not ctx.supports("--sentry-dsn"):
        return [unavailable(NAME, "not available yet (no --sentry-dsn)", TARGET)]
    runs = 3 if ctx.quick else 10
    with _receiver() as port:
        dsn = f"http://public@{LOCALHOST}:{port}/1"
        variants: dict[str, list[str]] = {
            "supervisor": [*ctx.supervisor.argv, "--sentry-dsn", dsn, "--", *CRASH],
            "no DSN": [*ctx.supervisor.argv, "--", *CRASH],
        }
        tini = ctx.peers.get("tini")
        if tini is not None:
            variants["tini"] = [*tini.argv, *CRASH]
        samples: dict[str, list[float]] = {name: [] for name in variants}
        before = _Receiver.received
        for _ in Budget(runs, 60):
            for name, argv in variants.items():
                try:
                    took = _one_death(ctx, argv, name)
                except _Refused as refused:
                    return [unavailable(NAME, f"not available yet ({refused})", TARGET)]
                if took is not None:
                    samples[name].append(took)
        delivered = _Receiver.received - before

    ours = samples["supervisor"]
    if not ours:
        return [Row(name=NAME, ours="never exited in time", target=TARGET,
                    verdict=Verdict.FAIL)]
    peers = [f"{name} {ms(median(values))}" for name, values in samples.items()
             if name != "supervisor" and values]
    return [
        Row(
            name=NAME,
            ours=f"{median(ours):.3f} s (p90 {p90(ours):.3f} s, "
            f"{delivered}/{len(ours)} delivered)",
            peers=" · ".join(peers),
            target=TARGET,
            verdict=judge(median(ours) <= TARGET_S and delivered >= len(ours)),
            data={name: {"median_s": median(values), "p90_s": p90(values), "n": len(values)}
                  for name, values in samples.items() if values} | {"delivered": delivered},
        )
    ]


class _Refused(Exception):
    pass


def _one_death(ctx: Context, argv: list[str], name: str) -> Optional[float]:
    read_fd, write_fd = os.pipe()
    log = ctx.workdir / f"sentry-{name.replace(' ', '-')}.err"
    try:
        with open(log, "wb") as errors, spawn(argv, ctx.env, stdin=subprocess.DEVNULL,
                                              stdout=write_fd, stderr=errors) as process:
            os.close(write_fd)
            write_fd = -1
            died = read_ns(read_fd, 15.0)
            exited = exit_time(process, 15.0)
            status = process.poll()
    finally:
        os.close(read_fd)
        if write_fd >= 0:
            os.close(write_fd)
    if status == 2 and unknown_option(log.read_bytes()):
        raise _Refused(log.read_text(errors="replace").strip()[-80:])
    if died is None or exited is None:
        return None
    return exited - died
