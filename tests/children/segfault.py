"""Read address 0 from a function of our own, so faulthandler has a frame to show."""

import ctypes


def read_null_pointer() -> None:
    ctypes.string_at(0)


read_null_pointer()
