"""Schedules and governance jobs: cron jobs whose every occurrence is recorded, a
leader-elected scheduler, access reviews, control evaluation and reports."""

from __future__ import annotations
