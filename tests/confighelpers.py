"""
Helpers for the configuration tests: the smallest good file and a mixin that
writes variations of it and checks the one-line errors.
"""

from __future__ import annotations

import os

from callback_tw.config import Config, ConfigError, loadConfig

# The smallest good file: every section/key not written takes its default.
MINIMAL = {
    "callback": {"default_caller": "1000", "outbound_peer": "pss"},
    "sip": {"address": "127.0.0.1"},
    "peer_servers": {"pss": "127.0.0.1:5070", "as1": "127.0.0.1:6000"},
}


def render(sections: dict[str, dict[str, str]]) -> str:
    lines = []
    for name, keys in sections.items():
        lines.append(f"[{name}]")
        lines.extend(f"{key} = {value}" for key, value in keys.items())
    return "\n".join(lines) + "\n"


class ConfigTestMixin:
    def writeConfig(self, text: str, name: str = "callback.ini") -> str:
        directory = self.mktemp()
        os.makedirs(directory)
        # The default [media] prompts: a "prompts" folder beside the file.
        os.makedirs(os.path.join(directory, "prompts"))
        path = os.path.join(directory, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def writeConfigIn(self, directory: str, text: str) -> str:
        """
        Write a configuration file into an existing C{directory}, under a
        relative path when the working directory allows it.
        """
        path = os.path.join(directory, "other.ini")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return os.path.relpath(path)

    def load(self, changes: dict[str, dict[str, str | None]] | None = None) -> Config:
        """
        Load MINIMAL with C{changes} applied (a value of None removes a key).
        """
        sections = {name: dict(keys) for name, keys in MINIMAL.items()}
        for name, keys in (changes or {}).items():
            section = sections.setdefault(name, {})
            for key, value in keys.items():
                if value is None:
                    section.pop(key, None)
                else:
                    section[key] = value
        return loadConfig(self.writeConfig(render(sections)))

    def assertConfigError(
        self, changes: dict[str, dict[str, str | None]], expected: str
    ) -> ConfigError:
        """
        Loading MINIMAL with C{changes} fails with one line that names the
        file and contains C{expected}.
        """
        error = self.assertRaises(ConfigError, self.load, changes)
        message = str(error)
        self.assertNotIn("\n", message)
        self.assertTrue(message.startswith(error.path + ": "), message)
        self.assertIn(expected, message)
        return error
