"""Kubernetes' termination message file: what ``kubectl describe pod`` shows of an end.

Owns: keeping a short status in the file while the child runs, and the final
summary that replaces it, within the 4096 bytes Kubernetes reads.
Must not know: what the status or the summary says (the loop writes them).
"""

from __future__ import annotations

import os

# Kubernetes reads at most this many bytes of the file.
TERMINATION_LOG_LIMIT = 4096


class TerminationLog:
    """Kubernetes' termination message file: what ``kubectl describe pod`` shows.

    A status is kept there while the child runs, so that something useful is
    left even if the whole container is OOM-killed at once (cgroup v2
    ``memory.oom.group``); the final summary replaces it and is never
    overwritten by a later status. Kubernetes reads at most 4096 bytes.
    """

    def __init__(self, path: str = "/dev/termination-log") -> None:
        self.path = path
        self._final = False

    @property
    def enabled(self) -> bool:
        return os.path.isfile(self.path) and os.access(self.path, os.W_OK)

    def write_status(self, text: str) -> None:
        if not self._final:
            self._write(text)

    def write_final(self, text: str) -> None:
        self._final = True
        self._write(text)

    def _write(self, text: str) -> None:
        data = text.encode("utf-8", "replace")[:TERMINATION_LOG_LIMIT]
        # Cut at a character boundary, not inside a multi-byte one.
        data = data.decode("utf-8", "ignore").encode("utf-8")
        try:
            # In place, not write-and-rename: the file is usually a bind mount,
            # which cannot be replaced. Write first, then cut the old tail, so
            # a kill in between leaves the new text readable.
            fd = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC)
        except OSError:
            return
        try:
            os.pwrite(fd, data, 0)
            os.ftruncate(fd, len(data))
        except OSError:
            pass
        finally:
            os.close(fd)
