"""The relay's import-line filter: import lines out, every other byte in order."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor.importprofile import ImportProfile
from supervisor.output import Sink
from supervisor.reactor import Reactor
from supervisor.relay import ImportLineFilter, Relay, Tail, import_filter

IMPORT_LINES = [
    b"import time: self [us] | cumulative | imported package",
    b"import time:       523 |        523 |   _io",
    b"import time:      1840 |       5171 | encodings",
    b"import time:    200499 |     207769 |     slow.module",
]
OTHER_LINES = [
    b"INFO:     Started server process [7]",
    b"import time: 3 s, said the app",
    b"import time",
    b"imp",
    b"\xff\xfe not utf-8 \xc3",
    b"",
    b"  import time:       523 |        523 |   _io",
    b"import time:  1 | 2 | " + b"x" * 1500,
    b"| a table | row |",
    b"import time:|",
    b"import time: 1 | 2 | two words",
]


def run_filter(stream: bytes, cuts: list[int]) -> tuple[bytes, list[bytes]]:
    """Feed ``stream`` cut at ``cuts`` into a filter; return what passed and the lines taken."""
    taken: list[bytes] = []
    passed = bytearray()
    line_filter = ImportLineFilter(taken.append)
    previous = 0
    buffer = bytearray(len(stream) + 1)  # as the relay's read buffer, reused and larger
    for cut in [*sorted(set(cuts)), len(stream)]:
        piece = stream[previous:cut]
        buffer[: len(piece)] = piece
        line_filter.feed(buffer, len(piece), passed.extend)
        previous = cut
    passed += line_filter.flush()
    return bytes(passed), taken


def expected(lines: list[bytes], final_newline: bool) -> tuple[bytes, list[bytes]]:
    kept = bytearray()
    taken = []
    for index, line in enumerate(lines):
        last = index == len(lines) - 1
        ends = not last or final_newline
        if line in IMPORT_LINES and ends:
            taken.append(line)
            continue
        kept += line + (b"\n" if ends else b"")
    return bytes(kept), taken


@settings(max_examples=400, deadline=None)
@given(
    lines=st.lists(st.sampled_from(IMPORT_LINES + OTHER_LINES), max_size=30),
    final_newline=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=12),
)
def test_any_cut_of_the_stream_passes_the_same_bytes(
    lines: list[bytes], final_newline: bool, cuts: list[int]
) -> None:
    stream = b"\n".join(lines) + (b"\n" if final_newline and lines else b"")
    if not lines:
        final_newline = False
    passed, taken = run_filter(stream, [c for c in cuts if c <= len(stream)])
    assert (passed, taken) == expected(lines, final_newline)


def test_a_huge_line_without_newline_passes_through_in_pieces() -> None:
    taken: list[bytes] = []
    line_filter = ImportLineFilter(taken.append)
    chunk = bytearray(b"import time: " + b"y" * (1 << 20))
    sizes = []
    line_filter.feed(chunk, len(chunk), lambda piece: sizes.append(len(piece)))
    block = bytearray(b"z" * (1 << 20))
    for _ in range(100):  # 100 MB more of the same line
        line_filter.feed(block, len(block), lambda piece: sizes.append(len(piece)))
    last = bytearray(b"\nimport time:  1 |  2 | json\nend\n")
    line_filter.feed(last, len(last), lambda piece: sizes.append(len(piece)))
    assert sum(sizes) == len(chunk) + 100 * len(block) + 1 + 4
    assert taken == [b"import time:  1 |  2 | json"]
    assert line_filter.flush() == b""


def test_the_relay_takes_the_lines_of_a_real_interpreter_out(tmp_path: Path) -> None:
    """A real child with -X importtime through a real Relay into a real pipe."""
    out_read, out_write = os.pipe()
    reactor = Reactor()
    try:
        sink = Sink(reactor, out_write)
        tail = Tail()
        profile = ImportProfile()
        process = subprocess.Popen(
            [sys.executable, "-X", "importtime", "-c",
             "import sys, json; sys.stderr.write('hello\\n'); import decimal; "
             "sys.stderr.write('import time: said the app\\n')"],
            stderr=subprocess.PIPE,
        )
        assert process.stderr is not None
        relay = Relay(reactor, os.dup(process.stderr.fileno()), sink, tail,
                      line_filter=import_filter(profile, reactor.clock, reactor.clock()))
        process.stderr.close()
        process.wait(timeout=30)
        reactor.run_until(lambda: relay.closed, reactor.clock() + 30)
        assert sink.flush(reactor.clock() + 5, reactor.clock)
        # The sink writes through its own description of the pipe: read what is there.
        os.set_blocking(out_read, False)
        relayed = b""
        try:
            while chunk := os.read(out_read, 1 << 16):
                relayed += chunk
        except BlockingIOError:
            pass
    finally:
        os.close(out_read)
        os.close(out_write)
        reactor.close()
    assert relayed == b"hello\nimport time: said the app\n"
    assert tail.text() == relayed.decode()
    startup = profile.startup()
    assert {"json", "decimal", "site"} <= {line.split("| ")[-1].strip() for line in startup.lines}
    assert startup.processes == 1 and startup.count > 10
