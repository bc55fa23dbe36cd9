"""Which settings and account URLs want an event (the check that lets a batch
nobody subscribes to skip the store transaction)."""

from __future__ import annotations

from typing import Any

from mailgate_common import events, service_settings
from mailgate_webhooks.plan import Wanted, anyone_wants, urls_for
from mailgate_webhooks.store import SUBSCRIPTION_SETTINGS, Subscriptions

GLOBAL = "https://hooks.example.com/all"
OWN = "https://hooks.example.com/acct-a"


def sent(account: str) -> events.MessageSent:
    return events.MessageSent(account=account, queue_id="q1", message_id="<m@x>", response="250 ok",
                              envelope=events.Envelope(from_="a@x.test", to=["b@y.test"]))


def subscriptions(endpoints: bool = False, **stored: Any) -> Subscriptions:
    config = service_settings.with_defaults(SUBSCRIPTION_SETTINGS, stored)
    return Subscriptions(config, {"acct-a": OWN}, endpoints)


def wanted(*accounts: str) -> list[Wanted]:
    return [Wanted(i, sent(account), "messageSent") for i, account in enumerate(accounts)]


def test_nothing_set_up_wants_nothing() -> None:
    subs = subscriptions()
    assert urls_for(subs, sent("acct-b"), "messageSent") == []
    assert not anyone_wants(subs, wanted("acct-b"))


def test_the_global_url_follows_its_event_filter_and_switch() -> None:
    assert urls_for(subscriptions(webhooks=GLOBAL), sent("acct-b"), "messageSent") == [GLOBAL]
    bounces_only = subscriptions(webhooks=GLOBAL, webhookEvents=["messageBounce"])
    assert urls_for(bounces_only, sent("acct-b"), "messageSent") == []
    assert urls_for(bounces_only, sent("acct-b"), "messageBounce") == [GLOBAL]
    assert urls_for(subscriptions(webhooks=GLOBAL, webhooksEnabled=False), sent("acct-b"), "messageSent") == []


def test_an_account_url_adds_to_the_global_one_once() -> None:
    assert urls_for(subscriptions(webhooks=GLOBAL), sent("acct-a"), "messageSent") == [GLOBAL, OWN]
    same = Subscriptions(service_settings.with_defaults(SUBSCRIPTION_SETTINGS, {"webhooks": OWN}),
                         {"acct-a": OWN}, False)
    assert urls_for(same, sent("acct-a"), "messageSent") == [OWN]


def test_a_possible_endpoint_means_the_batch_is_planned() -> None:
    assert anyone_wants(subscriptions(endpoints=True), wanted("acct-b"))
    assert anyone_wants(subscriptions(), wanted("acct-b", "acct-a"))


def test_unknown_stored_settings_are_ignored_and_defaults_fill_in() -> None:
    config = service_settings.with_defaults(["webhooks", "webhookEvents"], {"webhooks": GLOBAL, "other": 1})
    assert config == {"webhooks": GLOBAL, "webhookEvents": ["*"]}
