"""The ``hierfl`` command's entry point: import with the garbage collector paused.

Importing torch, pandas and the rest allocates about a million long-lived objects; each
full collection during and after the imports walks them all again. Pausing collection
during the imports and then freezing what they built (``gc.freeze``) takes about half a
second off every command, which a sweep of short runs multiplies.
"""

import gc


def main() -> None:
    """Import the command line with collection paused, freeze the result, and run it."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        from hierfl.cli import main as cli_main
    finally:
        gc.freeze()
        if collecting:
            gc.enable()
    cli_main()
