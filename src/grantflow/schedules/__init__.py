"""Schedules: cron jobs whose every occurrence is recorded, and the leader-elected scheduler
that fires them. What a built-in governance job does (an access review, a control evaluation,
a report) lives in `grantflow.governance`, which `runners` loads by name."""

from __future__ import annotations
