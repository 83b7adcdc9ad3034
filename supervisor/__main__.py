"""Entry point: ``supervisor`` and ``python -m supervisor``."""

from __future__ import annotations

import os
import sys

from .errors import SupervisorError

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: typing is not imported at run time
if TYPE_CHECKING:
    from typing import Optional, Sequence


def main(argv: Optional[Sequence[str]] = None) -> int:
    from .cli import HelpRequested, parse_args
    from .config import LogFormat
    from .log import Logger
    from .output import write_direct

    args = sys.argv[1:] if argv is None else argv
    log = Logger(LogFormat.TEXT, lambda data: write_direct(2, data))
    try:
        config = parse_args(args, os.environ)
    except HelpRequested as shown:
        print(shown.text)
        return 0
    except SupervisorError as error:
        log.error(str(error))
        return error.status
    log = Logger(config.log_format, lambda data: write_direct(2, data))
    try:
        if config.send_report:
            from .notify import send_saved_report

            return send_saved_report(config, log)
        from .loop import run

        return run(config, os.environ, log)
    except SupervisorError as error:
        log.error(str(error))
        return error.status


def entry() -> None:
    """The console script: ``main``, then out without the interpreter's teardown.

    Everything the run owes (the report, the block, Sentry, the termination
    log) is done when ``main`` returns; tearing down some hundred modules
    would only delay the exit status a container platform waits for (about
    20 ms here).
    """
    status = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status)


if __name__ == "__main__":
    entry()
