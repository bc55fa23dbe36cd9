"""Inbound mail API: the routes the MX door follows and the messages it received."""
