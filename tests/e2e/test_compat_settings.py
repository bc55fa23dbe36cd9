"""EmailEngine's settings routes with its documented example requests: every key
mailgate has a meaning for is stored and read back, any other is refused by name;
queue pause; prepared settings from MAILGATE_SETTINGS applied at start."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.stack import BIN, Stack, free_port, wait_for

KEYS = ("webhooks", "webhookEvents", "notifyText", "notifyTextSize", "notifyHeaders", "serviceSecret",
        "logs", "serviceUrl", "webhooksEnabled")


def _read(api: httpx.Client, *keys: str) -> dict[str, Any]:
    response = api.get("/v1/settings", params={k: "true" for k in keys})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture
def restored(api: httpx.Client) -> Iterator[dict[str, Any]]:
    """The session's settings as they were, written back after the test (others rely on them)."""
    before = _read(api, *KEYS)
    yield before
    restore = {k: ("" if v is None and k in ("webhooks", "serviceUrl") else v) for k, v in before.items()}
    response = api.post("/v1/settings", json=restore)
    assert response.status_code == 200, response.text


def test_ee_settings_example_is_stored_and_read_back(api: httpx.Client, restored: dict[str, Any]) -> None:
    # EmailEngine's documented POST /v1/settings fields (values from its API reference examples).
    body = {
        "webhooks": restored["webhooks"],
        "webhookEvents": ["messageNew"],
        "notifyText": True,
        "notifyTextSize": 1048576,
        "notifyHeaders": ["List-ID"],
        "serviceSecret": "verysecret",
        "logs": {"all": False, "maxLogLines": 5000},
        "serviceUrl": "https://emailengine.example.com",
    }
    response = api.post("/v1/settings", json=body)
    assert response.status_code == 200, response.text
    assert response.json() == {"updated": sorted(body)}
    assert _read(api, *body) == body


@pytest.mark.parametrize(("key", "value"), [
    ("trackSentMessages", True),       # EmailEngine's deprecated switch, not in mailgate
    ("webhooksCustomHeaders", [{"key": "Authorization", "value": "Bearer x"}]),
    ("proxyUrl", "socks5://proxy.example.com:1080"),
    ("noSuchSetting", 1),              # nobody's
])
def test_unsupported_or_unknown_key_is_refused_by_name_and_nothing_stored(
    api: httpx.Client, restored: dict[str, Any], key: str, value: Any
) -> None:
    response = api.post("/v1/settings", json={"notifyTextSize": 777, key: value})
    assert response.status_code == 400, response.text
    error = response.json()
    assert error["statusCode"] == 400
    assert error["field"] == key
    assert key in error["message"]
    assert _read(api, "notifyTextSize")["notifyTextSize"] == restored["notifyTextSize"]


def test_bad_value_names_the_key(api: httpx.Client, restored: dict[str, Any]) -> None:
    response = api.post("/v1/settings", json={"notifyTextSize": -1})
    assert response.status_code == 400, response.text
    assert response.json()["field"] == "notifyTextSize"
    response = api.post("/v1/settings", json={"logs": {"all": True, "maxLines": 3}})
    assert response.status_code == 400, response.text
    assert response.json()["field"] == "logs"


def test_queue_settings_pause_and_resume(api: httpx.Client) -> None:
    response = api.get("/v1/settings/queue/notify")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["queue"] == "notify" and body["paused"] is False
    assert set(body["jobs"]) == {"active", "delayed", "paused", "waiting"}
    assert all(isinstance(v, int) and v >= 0 for v in body["jobs"].values())
    try:
        # EmailEngine's documented body.
        response = api.put("/v1/settings/queue/submit", json={"paused": True})
        assert response.status_code == 200, response.text
        assert response.json() == {"queue": "submit", "paused": True, "concurrency": None}
        assert api.get("/v1/settings/queue/submit").json()["paused"] is True
        response = api.put("/v1/settings/queue/submit", json={"concurrency": 4})
        assert response.json() == {"queue": "submit", "paused": True, "concurrency": 4}
    finally:
        response = api.put("/v1/settings/queue/submit", json={"paused": False, "concurrency": None})
    assert response.json() == {"queue": "submit", "paused": False, "concurrency": None}
    assert api.get("/v1/settings/queue/submit").json()["paused"] is False


def test_unknown_queue_or_field_is_refused(api: httpx.Client) -> None:
    response = api.get("/v1/settings/queue/bounces")
    assert response.status_code == 400, response.text
    assert response.json()["field"] == "queue"
    for body, field in (({"concurrency": 0}, "concurrency"), ({"paused": True, "priority": 1}, "priority")):
        response = api.put("/v1/settings/queue/submit", json=body)
        assert response.status_code == 400, response.text
        assert field in response.text
    assert api.get("/v1/settings/queue/submit").json()["paused"] is False


def test_prepared_settings_are_applied_at_start(stack: Stack, api: httpx.Client,
                                                restored: dict[str, Any]) -> None:
    prepared = {"notifyHeaders": ["X-Prepared"], "notifyTextSize": 4321}
    port = free_port()
    env = {**stack.env, "MAILGATE_API_PORT": str(port), "MAILGATE_SETTINGS": json.dumps(prepared)}
    proc = subprocess.Popen([str(BIN / "mailgate-api")], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        def ready() -> bool:
            assert proc.poll() is None, "the api with MAILGATE_SETTINGS exited"
            try:
                return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, 30, message="api with prepared settings")
        # Read through the session's own api: the settings are in the shared database.
        assert _read(api, "notifyHeaders", "notifyTextSize") == prepared
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.parametrize(("prepared", "says"), [
    ('{"notifyText": true,', "MAILGATE_SETTINGS is not valid JSON"),
    ('{"trackOpens": "sometimes"}', "trackOpens"),
    ('{"notifyTextSize": "many"}', "notifyTextSize"),
])
def test_invalid_prepared_settings_stop_the_start_with_a_message(stack: Stack, prepared: str,
                                                                 says: str) -> None:
    env = {**stack.env, "MAILGATE_API_PORT": str(free_port()), "MAILGATE_SETTINGS": prepared}
    done = subprocess.run([str(BIN / "mailgate-api")], env=env, capture_output=True, timeout=60)
    assert done.returncode != 0
    output = (done.stdout + done.stderr).decode()
    assert "configuration error" in output and says in output, output
    assert "Traceback" not in output
