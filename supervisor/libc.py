"""``prctl(2)`` and ``syscall(2)`` from the C library, resolved once per process.

Owns: the two calls through ``_ctypes`` alone, and the one cached instance.
The ``ctypes`` package costs milliseconds to import (it builds every C type);
``_ctypes`` with the two types needed costs about one. The supervisor resolves
them before it forks, so that a child's steps between fork and exec (the
parent-death signal, the bind filter) are plain calls, not an import that
delays the app.
Must not know: what the calls are for.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: typing is not imported at run time
if TYPE_CHECKING:
    from typing import Any, Optional

_resolved: Optional[Libc] = None
_unavailable = False


class Libc:
    """The calls, with errno; made by ``libc()``."""

    def __init__(self) -> None:
        import _ctypes

        ct: Any = _ctypes

        class Long(ct._SimpleCData):  # type: ignore[misc]
            _type_ = "l"

        class Int(ct._SimpleCData):  # type: ignore[misc]
            _type_ = "i"

        class Char(ct._SimpleCData):  # type: ignore[misc]
            _type_ = "c"

        flags = ct.FUNCFLAG_CDECL | ct.FUNCFLAG_USE_ERRNO

        class LongCall(ct.CFuncPtr):  # type: ignore[misc]
            _flags_ = flags
            _restype_ = Long

        class IntCall(ct.CFuncPtr):  # type: ignore[misc]
            _flags_ = flags
            _restype_ = Int

        # NULL: the program itself and the libraries it loaded, libc among them.
        handle = ct.dlopen(None)
        self._ct: Any = ct
        self._long: Any = Long
        self._char: Any = Char
        self._syscall = LongCall(ct.dlsym(handle, "syscall"))
        self._prctl = IntCall(ct.dlsym(handle, "prctl"))

    def buffer(self, data: bytes) -> Any:
        """A C copy of ``data``; keep it referenced for as long as its address is used."""
        return (self._char * len(data)).from_buffer_copy(data)

    def address(self, buffer: Any) -> int:
        return int(self._ct.addressof(buffer))

    def syscall(self, number: int, *args: int) -> tuple[int, int]:
        """The result and errno (meaningful only when the result is negative)."""
        self._ct.set_errno(0)
        result = self._syscall(*(self._long(value) for value in (number, *args)))
        return int(result), int(self._ct.get_errno())

    def prctl(self, option: int, value: int) -> tuple[int, int]:
        """The result and errno, as ``syscall``."""
        self._ct.set_errno(0)
        result = self._prctl(self._long(option), self._long(value), self._long(0),
                             self._long(0), self._long(0))
        return int(result), int(self._ct.get_errno())


def libc() -> Optional[Libc]:
    """The calls, resolved at the first use; None where they cannot be (not Linux)."""
    global _resolved, _unavailable
    if _resolved is None and not _unavailable:
        try:
            _resolved = Libc()
        except (ImportError, AttributeError, OSError):
            _unavailable = True
    return _resolved
