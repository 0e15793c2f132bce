"""Thin I/O shells around nats-py and websockets; the decisions they carry out live in ``gateway.core``."""
