"""The Textual face: a keyboard-first cockpit over `Shopper`."""
