"""Where the Textual stylesheets are: inside the installed package, or the source checkout."""

from pathlib import Path


def styles_dir() -> Path:
    """`gpushop_tui/styles` in a wheel install; the top-level `styles/` in a source checkout."""
    package = Path(__file__).resolve().parent.parent
    installed = package / "styles"
    return installed if installed.is_dir() else package.parent / "styles"
