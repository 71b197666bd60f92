"""Print the advice table as Markdown, or with --write regenerate the reference pages, whose
docs/reference/errors.md is where the table is documented (the README no longer carries it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from grantflow.advice.markdown import markdown

REFERENCE = Path(__file__).resolve().with_name("docs_reference.py")


def main(argv: list[str]) -> int:
    if "--write" in argv:
        return subprocess.run([sys.executable, str(REFERENCE), "--write"], check=False).returncode
    print(markdown())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
