"""glibc's allocator, tuned for a long-lived server and asked to give freed memory back.

glibc keeps memory that C code (Pillow's decoders, LiteRT, TensorFlow's converter) and Python free in
its heaps for reuse, and gives every new thread its own heap ("arena", up to 8 per core) that keeps
its own free memory. The app server runs each script run in a new thread, so each visitor's decodes
can leave freed memory in another arena: measured in a 1 GB container, four visits uploading hostile
images left 265 MB free but held in the heaps (docs/memory.md, Soak). :func:`tune_for_server` caps
the arenas and sends large blocks straight to the system; :func:`release_freed_memory` returns what
the heaps hold free. Both are no-ops where the C library is not glibc (macOS, musl).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import gc

#: ``mallopt`` parameters (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
#: Heaps (arenas) all threads share in a server: 2 like ``MALLOC_ARENA_MAX=2``, the setting
#: documented for long-lived multi-threaded servers.
SERVER_ARENAS = 2
#: Blocks of at least this many bytes are mapped from the system and returned to it when freed
#: (decoded images, upload buffers) rather than kept in a heap. Setting it also stops glibc from
#: raising the threshold by itself after such a block is freed (up to 32 MB), which is what moves
#: whole decoded images into the heaps.
SERVER_MMAP_THRESHOLD = 1 << 20
#: Free memory at the top of a heap above this is returned at once (glibc's default: 128 KB, raised
#: by itself like the mmap threshold).
SERVER_TRIM_THRESHOLD = 4 << 20


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """glibc, or None where the C library is another one."""
    name = ctypes.util.find_library("c")
    with contextlib.suppress(OSError, TypeError):
        libc = ctypes.CDLL(name or "libc.so.6")
        if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim"):
            return libc
    return None


def tune_for_server() -> bool:
    """Cap glibc's arenas at :data:`SERVER_ARENAS` and fix its mmap and trim thresholds, for the
    process from now on (call it first thing: arenas made before stay). True where it applied.

    Environment variables (``MALLOC_ARENA_MAX``) would only work when set before the process
    starts, which a hosting service that runs ``streamlit run`` does not let an app do; ``mallopt``
    works from inside. Idempotent and cheap."""
    libc = _glibc()
    if libc is None:
        return False
    settings = (
        (M_ARENA_MAX, SERVER_ARENAS),
        (M_MMAP_THRESHOLD, SERVER_MMAP_THRESHOLD),
        (M_TRIM_THRESHOLD, SERVER_TRIM_THRESHOLD),
    )
    return all(libc.mallopt(parameter, value) == 1 for parameter, value in settings)


def release_freed_memory(collect_garbage: bool = True) -> None:
    """Return memory freed by Python and C libraries to the system (glibc keeps it in its heaps
    otherwise): a garbage collection (unless ``collect_garbage`` is False), then ``malloc_trim(0)``,
    which releases the free pages of every arena. A few milliseconds; a no-op without glibc."""
    if collect_garbage:
        gc.collect()
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
