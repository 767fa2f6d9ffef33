"""The operator commands' shared terminal output (rich), one console for every command."""

from __future__ import annotations

from rich.console import Console

console = Console(soft_wrap=True)
