from __future__ import annotations

from grantflow.cli.main import main

main()
