"""Thin I/O shells: the WebSocket connection layer (``websocket.py``), the data plane's NATS connection
(``nats_link.py``) and nats-py for JetStream and KV; the decisions and protocols they carry out live in
``gateway.core``."""
