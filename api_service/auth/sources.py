"""Where secrets come from: environment variables or secret files, never settings values.

A source is written ``env:NAME`` (the variable holds one secret) or ``file:/path`` (one secret
per non-empty line; the form Docker and Kubernetes secrets mount). Settings name sources, so a
config file or a process listing shows where a key lives, not the key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from paca_runtime.settings import SettingsError


def check_source(source: str, setting: str) -> None:
    """Raise SettingsError naming ``setting`` unless ``source`` is ``env:NAME`` or ``file:PATH``."""
    kind, _, rest = source.partition(":")
    if kind not in {"env", "file"} or not rest:
        # The value is not echoed: a secret pasted where its source belongs must not be logged.
        raise SettingsError(f'"{setting}": each source must be env:NAME or file:/path')


def read_sources(
    sources: Sequence[str], setting: str, environ: Mapping[str, str] | None = None
) -> list[str]:
    """The secrets of ``sources``, in order.

    Raises:
        SettingsError: A variable is unset or a file unreadable (named, its content never).
    """
    env = os.environ if environ is None else environ
    secrets: list[str] = []
    for source in sources:
        check_source(source, setting)
        kind, _, rest = source.partition(":")
        if kind == "env":
            value = env.get(rest, "").strip()
            if not value:
                raise SettingsError(f'"{setting}": environment variable {rest} is not set')
            secrets.append(value)
            continue
        try:
            text = Path(rest).read_text(encoding="utf-8")
        except OSError as exc:
            raise SettingsError(f'"{setting}": cannot read {rest}: {exc.strerror}') from None
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if not lines:
            raise SettingsError(f'"{setting}": {rest} holds no secret')
        secrets.extend(lines)
    return secrets
