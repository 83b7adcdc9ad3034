"""The child's process tree: which processes it holds, and their resident memory.

Owns: finding the descendants of the child (from /proc's children lists on
Linux, psutil elsewhere), when to look for them again, and summing their RSS
from ``statm``, whose files are kept open between samples.
Must not know: cgroups, limits, warnings or the report (``memory``), nor when
samples are taken (``watch``).
"""

from __future__ import annotations

from . import procfs

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: typing is not imported at run time
if TYPE_CHECKING:
    from typing import Optional

# Tree discovery reads the children lists of every process in the tree (a
# scan of all of /proc where the kernel has none), against a few microseconds
# to read statm of pids already known. Rediscover every few seconds, and at
# once when a known process has gone.
REDISCOVER_EVERY_S = 2.0
# statm files kept open between samples (one pread each instead of open, read,
# read and close); the processes of a larger tree are read by path.
KEPT_STATM_FILES = 32


class ProcessTree:
    """RSS of a root process and all its descendants.

    RSS is summed per process, so pages shared between forked workers count
    once per worker: the sum is an upper bound of what the tree holds.
    Processes orphaned by the tree (re-parented to the supervisor) are no
    longer its descendants and are not counted.
    """

    def __init__(self, root_pid: int, rediscover_every: int) -> None:
        self._root_pid = root_pid
        self._rediscover_every = max(1, rediscover_every)
        self._countdown = 0
        self._pids: tuple[int, ...] = (root_pid,)
        # On Linux /proc says it all, and psutil (35 ms, several MiB) is never imported.
        self._proc = procfs.supported()
        # pid -> its statm, kept open while the pid is in the tree.
        self._statm: dict[int, procfs.OpenFile] = {}

    @property
    def pids(self) -> tuple[int, ...]:
        return self._pids

    def _rediscover(self) -> None:
        if self._proc:
            found = procfs.descendants(self._root_pid)
        else:
            import psutil  # not Linux: no /proc to read

            try:
                found = [p.pid for p in psutil.Process(self._root_pid).children(recursive=True)]
            except psutil.NoSuchProcess:
                found = []
        self._pids = (self._root_pid, *(pid for pid in found if pid != self._root_pid))
        if self._proc:
            self._keep_open()

    def _keep_open(self) -> None:
        kept = self._statm
        for pid in [pid for pid in kept if pid not in self._pids]:
            kept.pop(pid).close()
        for pid in self._pids:
            if len(kept) >= KEPT_STATM_FILES:
                break
            if pid not in kept:
                opened = procfs.OpenFile.open(f"{procfs.PROC}/{pid}/statm")
                if opened is not None:
                    kept[pid] = opened

    def _rss(self, pid: int) -> Optional[int]:
        if self._proc:
            kept = self._statm.get(pid)
            if kept is not None:
                data = kept.read(procfs.STATM_LIMIT)
                if data is not None:
                    return procfs.parse_statm_rss(data)
                # Reaped: the pid may be another process's by now. Read by
                # path, as for any pid not kept open; the next discovery
                # keeps the new one open if it is in the tree.
                del self._statm[pid]
                kept.close()
            return procfs.statm_rss(pid)
        import psutil

        try:
            return int(psutil.Process(pid).memory_info().rss)
        except psutil.Error:
            return None

    def rss(self) -> tuple[Optional[int], int]:
        """(total RSS in bytes, number of processes read); (None, 0) when none is left."""
        if self._countdown <= 0:
            self._rediscover()
            self._countdown = self._rediscover_every
        self._countdown -= 1
        total = 0
        read = 0
        for pid in self._pids:
            rss = self._rss(pid)
            # A zombie (dead, not yet reaped) reads as 0 pages: it holds nothing.
            if not rss:
                # Gone: its pid could be reused, and its parent may have
                # started a replacement; look again next time.
                self._countdown = 0
                continue
            total += rss
            read += 1
        return (total, read) if read else (None, 0)

    def close(self) -> None:
        """Close the files kept open; a later ``rss`` opens them again."""
        for kept in self._statm.values():
            kept.close()
        self._statm.clear()
        self._countdown = 0
