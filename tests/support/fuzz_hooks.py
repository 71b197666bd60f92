"""Schemathesis hooks for the API fuzz test (loaded by the schemathesis process through
SCHEMATHESIS_HOOKS): the fuzzer's own admin is never disarmed.

Every route is fuzzed, `POST /tokens/{token_id}/revoke` and `PATCH /users/{user_id}` included,
but a call that would revoke the fuzzer's own token, or deactivate or demote its own user, is
pointed at a spare one instead: after it, every later request would answer 401 or 403 and the
rest of the run would test nothing.
"""

from __future__ import annotations

import os
from typing import Any

import schemathesis

OWN_TOKEN = os.environ.get("FUZZ_OWN_TOKEN_ID", "")
SPARE_TOKEN = os.environ.get("FUZZ_SPARE_TOKEN_ID", "")
OWN_USER = os.environ.get("FUZZ_OWN_USER_ID", "")
SPARE_USER = os.environ.get("FUZZ_SPARE_USER_ID", "")


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    params = case.path_parameters
    if not params:
        return
    if params.get("token_id") == OWN_TOKEN:
        params["token_id"] = SPARE_TOKEN
    if case.method.upper() == "PATCH" and params.get("user_id") == OWN_USER:
        params["user_id"] = SPARE_USER
