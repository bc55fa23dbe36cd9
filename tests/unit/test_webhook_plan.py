"""Planning deliveries for a batch of events (pure: no database, no slots taken)."""

from __future__ import annotations

import pytest

from mailgate_common import events, service_settings
from mailgate_common.crypto import Sealer
from mailgate_webhooks import plan
from mailgate_webhooks.jobs import Target
from mailgate_webhooks.store import SUBSCRIPTION_SETTINGS, EndpointRow, Subscriptions
from mailgate_webhooks.targets import UNREADABLE_SECRET, Targets

GLOBAL = "https://hooks.example.com/all"
SEALER = Sealer("current-secret")


class Slots:
    def __init__(self, per_destination: int, total: int) -> None:
        self.per_destination, self.total = per_destination, total

    def room(self, dest: str) -> int:
        return min(self.per_destination, self.total)

    def free(self) -> int:
        return self.total


def sent(account: str, n: int) -> plan.Wanted:
    event = events.MessageSent(account=account, queue_id=f"q{n}", message_id=f"<{n}@x>", response="250 ok",
                               envelope=events.Envelope(from_="a@x.test", to=["b@y.test"]))
    return plan.Wanted(n, event, "messageSent")


def endpoint(endpoint_id: str, sealer: Sealer = SEALER, ready: bool = True, **fields: object) -> EndpointRow:
    values: dict[str, object] = dict(
        id=endpoint_id, url=f"https://{endpoint_id}.example/hooks", account_id=None, events=["*"],
        accounts=None, headers={"X-Tenant": "t"}, secret=sealer.seal({"secret": f"whsec_{endpoint_id}"}),
        previous_secret=None, ready=ready,
    )
    values.update(fields)
    return EndpointRow(**values)  # type: ignore[arg-type]


def subscriptions(**stored: object) -> Subscriptions:
    return Subscriptions(service_settings.with_defaults(SUBSCRIPTION_SETTINGS, stored), {}, True)


def planned(wanted: list[plan.Wanted], rows: list[EndpointRow], slots: Slots,
            subscribed: Subscriptions | None = None) -> list[plan.PlannedDelivery]:
    targets = Targets(SEALER)
    return plan.plan(
        wanted, subscribed or subscriptions(), rows, slots, service_secret="whsec_service",
        endpoint_target=lambda e: targets.for_endpoint(e.url, e.headers, e.secret, e.previous_secret, e.id),
        service_url=None,
    )


def test_slots_are_granted_per_destination_and_per_replica_in_batch_order() -> None:
    wanted = [sent("acct-a", n) for n in range(4)]
    result = planned(wanted, [endpoint("wh_a"), endpoint("wh_b")], Slots(per_destination=3, total=4))
    assert [(p.wanted.index, p.dest, p.target is not None) for p in result] == [
        (0, "wh_a", True), (0, "wh_b", True), (1, "wh_a", True), (1, "wh_b", True),
        (2, "wh_a", False), (2, "wh_b", False), (3, "wh_a", False), (3, "wh_b", False),
    ]
    target = result[0].target
    assert isinstance(target, Target) and target.secret == "whsec_wh_a" and target.headers == {"X-Tenant": "t"}


def test_a_backed_off_endpoint_gets_its_delivery_stored_but_no_slot() -> None:
    [waiting] = planned([sent("acct-a", 0)], [endpoint("wh_a", ready=False)], Slots(8, 32))
    assert waiting.target is None and not waiting.ready


def test_filters_decide_which_endpoints_get_an_event() -> None:
    rows = [endpoint("wh_bounces", events=["messageBounce"]), endpoint("wh_other", account_id="acct-b"),
            endpoint("wh_listed", accounts=["acct-a"]), endpoint("wh_all")]
    assert [p.dest for p in planned([sent("acct-a", 0)], rows, Slots(8, 32))] == ["wh_listed", "wh_all"]


def test_an_endpoint_whose_secret_opens_with_no_key_fails_alone() -> None:
    lost = endpoint("wh_lost", sealer=Sealer("a-secret-nobody-has-any-more"))
    result = planned([sent("acct-a", 0)], [lost, endpoint("wh_fine")], Slots(8, 32),
                     subscriptions(webhooks=GLOBAL))
    by_dest = {p.dest: p.target for p in result}
    assert set(by_dest) == {GLOBAL, "wh_lost", "wh_fine"}
    assert by_dest["wh_lost"] is not None and by_dest["wh_lost"].unusable == UNREADABLE_SECRET
    assert by_dest["wh_fine"] is not None and by_dest["wh_fine"].unusable is None
    assert by_dest[GLOBAL] == Target(GLOBAL, "whsec_service", None, {})


def test_a_url_subscription_needs_the_service_secret_fetched_beforehand() -> None:
    with pytest.raises(ValueError, match="service secret"):
        plan.plan([sent("acct-a", 0)], subscriptions(webhooks=GLOBAL), [], Slots(8, 32), service_secret=None,
                  endpoint_target=lambda e: Targets.for_url(e.url, ""), service_url=None)
