"""Generated workflow documents, valid and invalid, sent to the real API: never a 5xx, and a
document the gate rejects never becomes a published version."""

from __future__ import annotations

import itertools
import json
from typing import Any

import httpx
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Api

GOOD_IDS = ["create", "notify", "check", "wait", "done", "fetch"]
BAD_IDS = ["Bad-Id", "", "x" * 70, "9lives"]
GOOD_TEMPLATES = [
    "{{ input.email }}",
    "https://dir.example.com/users/{{ steps.create.output.id }}",
    "{% for g in identity.groups %}{{ g }},{% endfor %}",
    "{{ identity.department | lower }}",
    "{{ input.seats | default(1) }}",
    "Welcome {{ identity.display_name }}",
    "plain text",
]
BAD_TEMPLATES = [
    "{{ steps.ghost.output }}",
    "{{ user.name }}",
    "{{ input.__class__ }}",
    "{{ input['__globals__'] }}",
    "{{ ''.__class__.__mro__ }}",
    "{{ input.email ",
    "{{ input.email | shout }}",
    "a\x00b",
    "\ud800",
]
GOOD_CONDITIONS = [
    "grant.role == 'admin'",
    "identity.employment_type != 'contractor'",
    "'staff' in identity.groups",
    "input.count > 2",
]
BAD_CONDITIONS = ["input.count >", "input.__class__", "unknown_name", "{{ input.x }}"]
GOOD_DURATIONS = ["30s", "5m", "1h30m", "PT5M", 45, "0s"]
BAD_DURATIONS = [-3, "soon", "5 minutes"]
URLS = ["https://api.example.com/users", "http://10.0.0.5/x"] * 3 + ["/relative", "ftp://x.io"]

any_ids = st.sampled_from(GOOD_IDS * 15 + BAD_IDS)  # mostly well-formed ids
templates = st.one_of(st.sampled_from(GOOD_TEMPLATES * 4 + BAD_TEMPLATES), st.text(max_size=30))
conditions = st.one_of(
    st.sampled_from(GOOD_CONDITIONS * 4 + BAD_CONDITIONS), st.text(min_size=1, max_size=20)
)
durations = st.sampled_from(GOOD_DURATIONS * 3 + BAD_DURATIONS)
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20), templates
)
junk = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(st.text(max_size=8), children, max_size=3),
    ),
    max_leaves=8,
)
CONFIGS: dict[str, st.SearchStrategy[Any]] = {
    "http": st.fixed_dictionaries(
        {"url": st.one_of(st.sampled_from(URLS), templates)},
        optional={
            "method": st.sampled_from(["GET", "POST", "PATCH", "DELETE"] * 2 + ["BREW"]),
            "headers": st.dictionaries(
                st.sampled_from(["Authorization", "X-Trace"]), templates, max_size=2
            ),
            "body": junk,
            "expect": st.lists(st.sampled_from([200, 201, 204, 404, 409, 0, 700]), max_size=2),
        },
    ),
    "http_connection": st.fixed_dictionaries(
        {"connection": st.sampled_from(["directory", "{{ input.conn }}"]), "path": templates}
    ),
    "set": st.fixed_dictionaries(
        {"values": st.dictionaries(st.sampled_from(["id", "who", "n"]), junk, max_size=3)}
    ),
    "delay": st.one_of(
        st.fixed_dictionaries({"duration": durations}),
        st.fixed_dictionaries({"until": templates}),
        st.fixed_dictionaries({}, optional={"duration": durations, "until": templates}),
    ),
    "condition": st.just({}),
    "ldap": st.dictionaries(st.sampled_from(["dn", "filter"]), templates, max_size=2),
}
step_extras = st.fixed_dictionaries(
    {},
    optional={
        "name": st.text(max_size=20),
        "timeout": st.sampled_from(["30s", "5m", "2h", "1h30m"]),
        "retry": st.fixed_dictionaries(
            {},
            optional={
                "max_attempts": st.sampled_from([1, 3, 5]),
                "initial_backoff": st.sampled_from(GOOD_DURATIONS),
                "jitter": st.sampled_from(["full", "none"]),
            },
        ),
        "on_failure": st.sampled_from(["fail", "escalate", "continue"]),
        "reversible": st.booleans(),
        "max_iterations": st.sampled_from([1, 3, 10]),
    },
)
triggers = st.one_of(
    st.fixed_dictionaries({"type": st.sampled_from(["manual", "identity_joined", "webhook"])}),
    st.fixed_dictionaries({"type": st.sampled_from(["manual", "identity_left", "identity_moved"])}),
    st.fixed_dictionaries({"type": st.sampled_from(["access_granted", "access_revoked"])}),
    st.fixed_dictionaries(
        {
            "type": st.just("schedule"),
            "cron": st.sampled_from(["0 6 * * 1-5", "*/15 * * * *", "61 * * * *", "@daily", ""]),
        },
        optional={"timezone": st.sampled_from(["UTC", "Europe/Berlin", "Mars/Base", "America"])},
    ),
    st.fixed_dictionaries(
        {"type": st.just("manual")},
        optional={
            "input_schema": st.sampled_from(
                [{"type": "object"}, {"type": "person"}, {"required": "email"}, {}]
            )
        },
    ),
)
bad_triggers = st.one_of(st.fixed_dictionaries({"type": st.sampled_from(["on_tuesday", ""])}), junk)


@st.composite
def shaped_documents(draw: st.DrawFn) -> dict[str, Any]:
    """Documents mostly of the right shape, whose links, types, templates and triggers vary:
    a chain of steps where some links, configs and references are wrong."""
    count = draw(st.sampled_from([0, 1, 2, 3, 3, 4, 4, 5]))
    unique = draw(st.sampled_from([True] * 4 + [False]))
    step_ids = draw(st.lists(any_ids, min_size=count, max_size=count, unique=unique))
    steps: list[Any] = []
    for index, step_id in enumerate(step_ids):
        kind = draw(st.sampled_from(["http", "set", "delay", "condition"] * 3 + ["ldap"]))
        config_kind = kind
        if kind == "http" and draw(st.sampled_from([False] * 9 + [True])):
            config_kind = "http_connection"
        following = step_ids[index + 1] if index + 1 < len(step_ids) else None
        link = draw(st.sampled_from(["chain"] * 6 + ["other", "none"]))
        target = following if link == "chain" else draw(any_ids) if link == "other" else None
        step: dict[str, Any] = {"id": step_id, "type": kind, "config": draw(CONFIGS[config_kind])}
        if kind == "condition" or draw(st.sampled_from([False] * 5 + [True])):
            step["branches"] = draw(
                st.lists(
                    st.fixed_dictionaries({"when": conditions, "next": any_ids}),
                    min_size=1,
                    max_size=2,
                )
            )
        if target is not None:
            step["next"] = target
        if draw(st.booleans()):
            step.update(draw(step_extras))
        steps.append(draw(junk) if draw(st.sampled_from([False] * 15 + [True])) else step)
    document: dict[str, Any] = {
        "name": draw(st.sampled_from(["Generated", "Generated flow", "Gen-3.b"])),
        "trigger": draw(triggers),
        "steps": steps,
    }
    optional = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "description": st.text(max_size=40),
                "application": st.sampled_from(["Wiki", "Missing app"]),
                "settings": st.fixed_dictionaries(
                    {},
                    optional={
                        "execution_timeout": st.sampled_from(["1h", "10m", "2h"]),
                        "max_concurrent_runs": st.sampled_from([1, 5]),
                    },
                ),
                "entry": any_ids,
            },
        )
    )
    document.update(optional)
    if draw(st.sampled_from([False] * 7 + [True])):  # now and then, one field of a wrong shape
        document[draw(st.sampled_from(["name", "trigger", "steps", "settings", "colour"]))] = draw(
            junk
        )
    return document


junk_documents = st.fixed_dictionaries(
    {"name": st.sampled_from(["Junk", "", "bad/name"])},
    optional={
        "trigger": st.one_of(triggers, bad_triggers),
        "steps": st.lists(junk, max_size=3),
        "extra": junk,
    },
)
documents = st.one_of(shaped_documents(), shaped_documents(), shaped_documents(), junk_documents)


def _body(document: dict[str, Any], as_yaml: bool) -> tuple[bytes, str]:
    if as_yaml:
        return yaml.safe_dump(document, allow_unicode=False).encode(), "application/yaml"
    return json.dumps(document).encode(), "application/json"


def test_generated_documents_never_cause_a_5xx_and_invalid_ones_never_publish(
    api: Api, admin: httpx.Client
) -> None:
    """Whatever document is sent, the API answers 2xx/4xx; gate failures leave no published
    version, and publishing succeeds exactly when validate says the gate passes."""
    assert admin.post("/api/v1/applications", json={"name": "Wiki"}).status_code == 201
    serial = itertools.count()

    @settings(
        max_examples=80,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(document=documents, as_yaml=st.booleans())
    def check(document: dict[str, Any], as_yaml: bool) -> None:
        if document["name"]:
            document["name"] = f"{document['name']} {next(serial)}"  # one server, unique names
        content, media_type = _body(document, as_yaml)
        response = admin.post(
            "/api/v1/workflows", content=content, headers={"Content-Type": media_type}
        )
        assert response.status_code < 500, response.text
        if response.status_code != 201:
            assert response.status_code in (400, 409, 422), response.text
            return
        base = f"/api/v1/workflows/{response.json()['workflow']['id']}"

        validated = admin.post(f"{base}/versions/1/validate")
        assert validated.status_code == 200, validated.text
        dry_run = admin.post(f"{base}/versions/1/dry-run", json={"input": {"email": "a@b.c"}})
        assert dry_run.status_code == 200, dry_run.text
        assert dry_run.json()["sent"] is False

        published = admin.post(f"{base}/versions/1/publish")
        assert published.status_code < 500, published.text
        listed = admin.get(f"{base}/versions").json()
        if validated.json()["ok"]:
            assert published.status_code == 200, published.text
            assert [v["state"] for v in listed] == ["published"]
        else:
            assert published.status_code == 422, published.text
            assert published.json()["error"]["code"] == "publish_gate_failed"
            assert {d["code"] for d in published.json()["error"]["details"]} == {
                e["code"] for e in validated.json()["errors"]
            }
            assert [v["state"] for v in listed] == ["draft"]
            assert admin.get(base).json()["active_version"] is None

    check()
