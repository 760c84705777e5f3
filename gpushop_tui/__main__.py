"""`python -m gpushop_tui` runs the same entry point as the `gpushop` script."""

from gpushop_tui.cli import main

raise SystemExit(main())
