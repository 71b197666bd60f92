"""Redaction's cost on the per-step path. Prints ONE JSON object on stdout.

    .venv/bin/python bench/redaction.py

What an `http` step through a connection pays per call (engine/hot_path.py runs it for every
call): looking up the credential's redactor (`redactor_for`, cached: its search forms are built
once per credential), scrubbing the raw body (`text`) and the parsed output (`value`), for a
1 KiB JSON answer without escapes, the same with JSON escapes (`\\/`, `\\uXXXX`: the escaped
path), a 16 KiB answer (what a run record keeps) and a 1 MiB one (the most a step reads). Each
figure is the median over repeats, in microseconds; `exact_replace_us` is the replaced scheme
(one `str.replace` per known secret text) on the same body, for comparison.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from typing import Any

from grantflow.redaction import REDACTED, redactor_for

SECRET = "s3cr3t-T0ken/with+symbols=="
USER = "svc"


def _median_us(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return round(statistics.median(times) * 1e6, 2)


def _body(items: int, escaped: bool) -> str:
    rows = [
        {
            "id": f"u-{i}",
            "userName": f"person{i}@example.com",
            "url": f"https://example.com/users/{i}",
            "groups": ["staff", "Zürich"],
        }
        for i in range(items)
    ]
    text = json.dumps({"Resources": rows}, ensure_ascii=escaped)
    return text.replace("/", "\\/") if escaped else text


def main() -> None:
    started = time.perf_counter()
    redactor = redactor_for([SECRET], [USER])
    first_build_us = round((time.perf_counter() - started) * 1e6, 2)
    old_secrets = [SECRET, "c3ZjOnMzY3IzdC1UMGtlbi93aXRoK3N5bWJvbHM9PQ=="]

    def exact(text: str) -> str:
        for secret in old_secrets:
            text = text.replace(secret, REDACTED)
        return text

    figures: dict[str, Any] = {
        "first_build_us": first_build_us,
        "cached_lookup_us": _median_us(lambda: redactor_for([SECRET], [USER]), 2000),
    }
    for name, body, repeats in [
        ("1k_plain", _body(6, False), 2000),
        ("1k_escaped", _body(6, True), 2000),
        ("16k", _body(100, True), 300),
        ("1m", _body(6500, True), 10),
    ]:
        parsed = json.loads(body)
        figures[name] = {
            "bytes": len(body),
            "text_us": _median_us(lambda b=body: redactor.text(b), repeats),  # type: ignore[misc]
            "value_us": _median_us(lambda p=parsed: redactor.value(p), repeats),  # type: ignore[misc]
            "exact_replace_us": _median_us(lambda b=body: exact(b), repeats),  # type: ignore[misc]
        }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
