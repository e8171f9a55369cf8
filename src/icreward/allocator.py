"""Keeping freed heap memory in the process, so scoring does not pay the kernel for the same pages batch after batch.

glibc's malloc gives the top of its heap back to the kernel as soon as more than a little of it is free (its
`M_TOP_PAD` is 128 KiB), and the next batch's tensors of the same sizes fault the same pages in again, zeroed by the
kernel: scoring 200 videos with the default model spent 4.7 of its 18 CPU seconds in the kernel that way. Keeping
512 MiB of freed memory at the heap's top cut that to 0.7 s (1.25x the whole command; peak memory +75 MiB).

The `icreward` command does this at start; `retain_freed_memory()` does it for a Python process. A value the user
set (`MALLOC_TOP_PAD_`, or `glibc.malloc.top_pad` in `GLIBC_TUNABLES`) is left as it is, and `ICREWARD_RETAIN_MEMORY=0`
leaves malloc's defaults alone. Elsewhere than glibc (macOS, musl, Windows) nothing changes. Setting the pad turns
off glibc's sliding mmap threshold (a small pad set explicitly cost 11.7 s in the kernel on the run above), so the
threshold is set with it, at glibc's largest.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

RETAINED_TOP_PAD = 512 * 1024 * 1024
# Allocations from this size up are mmap'ed (and unmapped on free) instead of taken from the heap: the largest value
# glibc accepts on 64-bit. glibc slides its threshold up to it by itself, but any mallopt stops the sliding, and a
# threshold left at the 128 KiB it starts from would send every batch tensor to mmap.
MMAP_THRESHOLD = 32 * 1024 * 1024
_M_TOP_PAD, _M_MMAP_THRESHOLD = -2, -3  # mallopt's parameter numbers (malloc.h)


def set_malloc(top_pad: int, mmap_threshold: int = MMAP_THRESHOLD) -> bool:
    """Set glibc malloc's `M_MMAP_THRESHOLD` and `M_TOP_PAD` (bytes of free memory kept at the heap's top); False
    where they cannot be set (not glibc)."""
    if not sys.platform.startswith("linux") or not (0 <= top_pad < 2**31 and 0 <= mmap_threshold < 2**31):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # no C library of that name, or one without mallopt (musl)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return mallopt(_M_MMAP_THRESHOLD, mmap_threshold) == 1 and mallopt(_M_TOP_PAD, top_pad) == 1


def user_chose() -> bool:
    """Whether the environment already chose the top pad, or asked for malloc's defaults (then nothing changes)."""
    return (
        "MALLOC_TOP_PAD_" in os.environ
        or "glibc.malloc.top_pad" in os.environ.get("GLIBC_TUNABLES", "")
        or os.environ.get("ICREWARD_RETAIN_MEMORY", "1") == "0"
    )


def retain_freed_memory(pad_bytes: int = RETAINED_TOP_PAD) -> bool:
    """Keep up to `pad_bytes` of freed heap memory in this process (glibc); True when it took effect. Best called
    early (the command calls it before importing torch): the first heap growth after it takes the pad at once."""
    return not user_chose() and set_malloc(pad_bytes)
