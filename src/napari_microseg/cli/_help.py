"""The help layout shared by every ``microseg`` subcommand."""

from __future__ import annotations

import argparse
import textwrap


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions kept as written (over-long lines wrapped); an option's default shown where its help
    does not give one.

    ``(default: X)`` is added only when the help text exists, does not already say
    "default", and the default means something (not None, False or suppressed), so a
    required option or a flag never shows "(default: None)".
    """

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        """Lines kept as written, except that one longer than 100 characters (and the terminal) is wrapped,
        keeping its indent."""
        lines = []
        for line in text.splitlines():
            if len(indent + line) <= max(width, 100) or not line.strip():  # docstrings' own lines stay
                lines.append(indent + line)
                continue
            lead = indent + line[: len(line) - len(line.lstrip())]
            lines.append(textwrap.fill(line.strip(), width, initial_indent=lead, subsequent_indent=lead))
        return "\n".join(lines)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (not text or "default" in text.lower() or default is None or default is False
                or default is argparse.SUPPRESS or action.required or not action.option_strings):
            return text
        return f"{text} (default: {default})"


class PairAction(argparse.Action):
    """An option taking two numbers written either way: ``--diameter-range 5,30`` or ``--diameter-range 5 30``."""

    def __init__(self, option_strings: list, dest: str, **kwargs):
        kwargs.setdefault("nargs", "+")
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: list, option_string: str | None = None) -> None:
        text = ",".join(str(v) for v in values)
        try:
            pair = tuple(float(v) for v in text.replace("x", ",").split(",") if v != "")
        except ValueError:
            pair = ()
        if len(pair) != 2:
            parser.error(f"argument {option_string}: expected two numbers, 'A,B' or 'A B', got {' '.join(map(str, values))!r}")
        setattr(namespace, self.dest, pair)
