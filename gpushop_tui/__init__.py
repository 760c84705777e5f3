"""gpushop: one live menu of rentable GPUs across marketplaces, and a supervisor that never
leaves an instance billing unattended.

Kept almost import-free on purpose (only `warnings`): `--help` and `--version` must stay fast.
"""

import warnings

# asyncssh still names cryptography's DSA types, and cryptography >= 51 warns about that on import.
# Nobody running gpushop can act on it, and it would bury the one line a refused command prints.
warnings.filterwarnings("ignore", message="DSA is deprecated", module=r"asyncssh\.")

__version__ = "0.1.0"
