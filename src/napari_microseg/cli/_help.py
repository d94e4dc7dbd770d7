"""The help layout shared by every ``microseg`` subcommand."""

from __future__ import annotations

import argparse


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions kept as written; an option's default shown where its help does not give one.

    ``(default: X)`` is added only when the help text exists, does not already say
    "default", and the default means something (not None, False or suppressed), so a
    required option or a flag never shows "(default: None)".
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (not text or "default" in text.lower() or default is None or default is False
                or default is argparse.SUPPRESS or action.required or not action.option_strings):
            return text
        return f"{text} (default: {default})"
