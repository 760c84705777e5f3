"""gpushop: one live menu of rentable GPUs across marketplaces, and a supervisor that never
leaves an instance billing unattended.

Kept import-free on purpose: `gpushop --help` and `--version` must stay fast.
"""

__version__ = "0.1.0"
