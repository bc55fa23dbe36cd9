"""Endpoints with ``excludeMachine`` get no opens and clicks flagged machine-made (webhooks plan)."""

from __future__ import annotations

from mailgate_common import events, service_settings
from mailgate_common.crypto import Sealer
from mailgate_webhooks import plan
from mailgate_webhooks.store import SUBSCRIPTION_SETTINGS, EndpointRow, Subscriptions
from mailgate_webhooks.targets import Targets

SEALER = Sealer("current-secret")


class Slots:
    def room(self, dest: str) -> int:
        return 100

    def free(self) -> int:
        return 100


def endpoint(endpoint_id: str, exclude_machine: bool) -> EndpointRow:
    return EndpointRow(id=endpoint_id, url=f"https://{endpoint_id}.example/hooks", account_id=None, events=["*"],
                       accounts=None, headers={}, secret=SEALER.seal({"secret": f"whsec_{endpoint_id}"}),
                       previous_secret=None, ready=True, exclude_machine=exclude_machine)


def destinations(event: events.Event) -> list[str | None]:
    name = event.webhook_name()
    assert name is not None
    targets = Targets(SEALER)
    subscribed = Subscriptions(service_settings.with_defaults(SUBSCRIPTION_SETTINGS, {}), {}, True)
    planned = plan.plan(
        [plan.Wanted(0, event, name)], subscribed, [endpoint("all", False), endpoint("people", True)], Slots(),
        service_secret="whsec_service",
        endpoint_target=lambda e: targets.for_endpoint(e.url, e.headers, e.secret, e.previous_secret, e.id),
        service_url=None,
    )
    return [p.endpoint_id for p in planned]


def test_machine_opens_and_clicks_skip_endpoints_that_exclude_them() -> None:
    assert destinations(events.TrackOpen(account="a", machine=True, machine_reason="apple_mpp")) == ["all"]
    assert destinations(events.TrackClick(account="a", url="https://e.example/", machine=True,
                                          machine_reason="scanner_network")) == ["all"]


def test_people_and_other_events_reach_every_endpoint() -> None:
    assert destinations(events.TrackOpen(account="a", first_open=True)) == ["all", "people"]
    # Flagged but not machine-made (an image proxy): still a person's open.
    assert destinations(events.TrackOpen(account="a", machine_reason="image_proxy")) == ["all", "people"]
    sent = events.MessageSent(account="a", queue_id="q", message_id="<m@x>", response="250 ok",
                              envelope=events.Envelope(from_="a@x.test", to=["b@y.test"]))
    assert destinations(sent) == ["all", "people"]
