"""The real supervisor, whose loop breaks for good once the app runs.

``python pid1_broken_loop.py [supervisor options] -- COMMAND...`` runs the
supervisor in this process, as ``python -m supervisor`` would, except that
the SIGUSR2 it receives makes the loop's signal callback raise EMFILE (as an
fd-exhausted loop would): an error in the signal inbox is not one a part can
be switched off for, so the loop ends and the supervisor must carry on as tini
would. The signal itself is still forwarded, from the handler.
"""

import errno
import os
import signal
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from supervisor.cli import parse_args
from supervisor.config import LogFormat
from supervisor.log import Logger
from supervisor.loop import Supervisor
from supervisor.output import write_direct


class BreakingSupervisor(Supervisor):
    def _on_signal(self, signum: int, forwarded: bool) -> None:
        if signum == signal.SIGUSR2:
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
        super()._on_signal(signum, forwarded)


config = parse_args(sys.argv[1:], os.environ)
log = Logger(LogFormat.TEXT, lambda data: write_direct(2, data))
sys.exit(BreakingSupervisor(config, os.environ, log).run())
