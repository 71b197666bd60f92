"""Python's cyclic garbage collector while a command starts: off while the command loads (its
imports allocate a great deal and free almost nothing, so the collector's passes during them
find nothing: about a sixth of a local command's start), on again once the command has opened
its database, and for good when it ends."""

from __future__ import annotations

import gc


def pause() -> None:
    gc.disable()


def resume() -> None:
    """On again; what was loaded lives as long as the process, so later full passes skip it."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()
