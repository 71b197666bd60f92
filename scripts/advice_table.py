"""Print the advice table as Markdown, or with --write rewrite the README's generated section."""

from __future__ import annotations

import sys
from pathlib import Path

from grantflow.advice.readme import replace_in, section

README = Path(__file__).resolve().parents[1] / "README.md"


def main(argv: list[str]) -> int:
    if "--write" in argv:
        README.write_text(replace_in(README.read_text()))
        return 0
    print(section())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
