"""redact: masking secrets in adversarial text costs linear time.

The stderr tail, the command and every string of the report go through
``supervisor.redact.Redactor`` on the way out. An app may print anything,
including one huge line built to make a backtracking pattern go quadratic
(a megabyte of letters before "://", of dashes, of ``-u x -p`` pairs). Each
case is masked at 1 MB and at 2 MB; linear time shows as a ratio near 2x
between the two (quadratic would be 4x, and minutes). The peer is the same
text through a single ``str.replace``: the cost of merely copying it.
"""

from __future__ import annotations

import time
from typing import Callable

from common import Budget, Context, Row, judge, median, ms

NAME = "redact: adversarial 2 MB line"
TARGET = "<= 3x the 1 MB time"
MB = 1_000_000

CASES: dict[str, Callable[[int], str]] = {
    "letters then ://": lambda n: "a" * (n // 2) + "://" + "b" * (n // 2),
    "dashes": lambda n: "-" * n,
    "short flags": lambda n: "-a " * (n // 3),
    "--a= flags": lambda n: "--a=" * (n // 4),
    "-u x -p pairs": lambda n: "-u x -p " * (n // 8),
    "schemes": lambda n: "a://u:" * (n // 6),
    "@ after userinfo": lambda n: "x://u:" + "@" * n,
    "printed argv": lambda n: "'--password', '" * (n // 15),
}


def run(ctx: Context) -> list[Row]:
    from supervisor.redact import Redactor

    redactor = Redactor.from_environ(
        {"DB_PASSWORD": "hunter22-not-in-text"}, ["app", "--token", "tok-not-in-text"])
    runs = 3 if ctx.quick else 7
    worst_name, worst_2mb, worst_1mb, worst_ratio = "", 0.0, 0.0, 0.0
    copies: list[float] = []
    data: dict[str, dict[str, float]] = {}
    for name, make in CASES.items():
        small, large = make(MB), make(2 * MB)
        times: dict[int, list[float]] = {MB: [], 2 * MB: []}
        for _ in Budget(runs, 20 if ctx.quick else 60):
            for size, text in ((MB, small), (2 * MB, large)):  # interleaved: same noise
                started = time.perf_counter()
                redactor.text(text)
                times[size].append(time.perf_counter() - started)
            started = time.perf_counter()
            large.replace("\0", "")
            copies.append(time.perf_counter() - started)
        one, two = median(times[MB]), median(times[2 * MB])
        data[name] = {"1mb_s": one, "2mb_s": two}
        if two / one > worst_ratio:
            worst_ratio = two / one
        if two > worst_2mb:
            worst_name, worst_2mb, worst_1mb = name, two, one
    return [
        Row(
            name=NAME,
            ours=f"{ms(worst_2mb)} worst ({worst_name}; 1 MB {ms(worst_1mb)})",
            peers=f"str.replace of 2 MB {ms(median(copies))}",
            ratio=f"{worst_ratio:.2f}x 1 MB (worst of {len(CASES)})",
            target=TARGET,
            verdict=judge(worst_ratio <= 3.0),
            data=data,
        )
    ]
