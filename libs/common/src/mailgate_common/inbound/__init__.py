"""Inbound mail: what the MX door (smtp-ingress) needs and what it shares.

``routes``: which recipients the door accepts and what each route does.
``auth``: SPF, DKIM and DMARC verdicts and the Authentication-Results header.
``payload``: the ``inboundMessage`` webhook body (EmailEngine's messageNew shape
plus envelope and verdicts), rendered by the webhooks service from the stored
message and by the door for synchronous routes.
"""
