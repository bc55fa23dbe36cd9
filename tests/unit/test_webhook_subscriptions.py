"""Which settings and account URLs want an event (the check that lets a batch
nobody subscribes to skip the store transaction)."""

from __future__ import annotations

from typing import Any

from mailgate_common import events, service_settings
from mailgate_webhooks.dispatch import SUBSCRIPTION_SETTINGS, Subscriptions

GLOBAL = "https://hooks.example.com/all"
OWN = "https://hooks.example.com/acct-a"


def sent(account: str) -> events.MessageSent:
    return events.MessageSent(account=account, queue_id="q1", message_id="<m@x>", response="250 ok",
                              envelope=events.Envelope(from_="a@x.test", to=["b@y.test"]))


def subscriptions(endpoints: bool = False, **stored: Any) -> Subscriptions:
    config = service_settings.with_defaults(SUBSCRIPTION_SETTINGS, stored)
    return Subscriptions(config, {"acct-a": OWN}, endpoints)


def test_nothing_set_up_wants_nothing() -> None:
    subs = subscriptions()
    assert subs.urls_for(sent("acct-b"), "messageSent") == []
    assert not subs.any_for([(0, sent("acct-b"), "messageSent")])


def test_the_global_url_follows_its_event_filter_and_switch() -> None:
    assert subscriptions(webhooks=GLOBAL).urls_for(sent("acct-b"), "messageSent") == [GLOBAL]
    bounces_only = subscriptions(webhooks=GLOBAL, webhookEvents=["messageBounce"])
    assert bounces_only.urls_for(sent("acct-b"), "messageSent") == []
    assert bounces_only.urls_for(sent("acct-b"), "messageBounce") == [GLOBAL]
    assert subscriptions(webhooks=GLOBAL, webhooksEnabled=False).urls_for(sent("acct-b"), "messageSent") == []


def test_an_account_url_adds_to_the_global_one_once() -> None:
    assert subscriptions(webhooks=GLOBAL).urls_for(sent("acct-a"), "messageSent") == [GLOBAL, OWN]
    same = Subscriptions(service_settings.with_defaults(SUBSCRIPTION_SETTINGS, {"webhooks": OWN}),
                         {"acct-a": OWN}, False)
    assert same.urls_for(sent("acct-a"), "messageSent") == [OWN]


def test_a_possible_endpoint_means_the_batch_is_planned() -> None:
    assert subscriptions(endpoints=True).any_for([(0, sent("acct-b"), "messageSent")])
    assert subscriptions().any_for([(0, sent("acct-b"), "messageSent"), (1, sent("acct-a"), "messageSent")])


def test_unknown_stored_settings_are_ignored_and_defaults_fill_in() -> None:
    config = service_settings.with_defaults(["webhooks", "webhookEvents"], {"webhooks": GLOBAL, "other": 1})
    assert config == {"webhooks": GLOBAL, "webhookEvents": ["*"]}
