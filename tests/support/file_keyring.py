"""A keyring backend for tests: a JSON file named by GPUSHOP_TEST_KEYRING, never the real one.

Subprocess tests select it with PYTHON_KEYRING_BACKEND=tests.support.file_keyring.FileKeyring
so that `gpushop keys set` in one process is visible to `gpushop keys list` in the next.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from keyring.backend import KeyringBackend
from keyring.errors import PasswordDeleteError


class FileKeyring(KeyringBackend):
    priority = 1  # type: ignore[assignment]

    def _path(self) -> Path:
        return Path(os.environ["GPUSHOP_TEST_KEYRING"])

    def _load(self) -> dict[str, str]:
        path = self._path()
        return json.loads(path.read_text()) if path.exists() else {}

    def _save(self, data: dict[str, str]) -> None:
        self._path().write_text(json.dumps(data))

    def get_password(self, service: str, username: str) -> str | None:
        return self._load().get(f"{service}/{username}")

    def set_password(self, service: str, username: str, password: str) -> None:
        data = self._load()
        data[f"{service}/{username}"] = password
        self._save(data)

    def delete_password(self, service: str, username: str) -> None:
        data = self._load()
        if data.pop(f"{service}/{username}", None) is None:
            raise PasswordDeleteError("not found")
        self._save(data)


class BrokenKeyring(KeyringBackend):
    """A backend that exists but fails, as a locked or crashed Secret Service does."""

    priority = 1  # type: ignore[assignment]

    def get_password(self, service: str, username: str) -> str | None:
        raise RuntimeError("org.freedesktop.secrets was not provided by any .service files")

    def set_password(self, service: str, username: str, password: str) -> None:
        raise RuntimeError("org.freedesktop.secrets was not provided by any .service files")

    def delete_password(self, service: str, username: str) -> None:
        raise RuntimeError("org.freedesktop.secrets was not provided by any .service files")
