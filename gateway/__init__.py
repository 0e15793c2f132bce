"""The Prism gateway node: WebSocket termination, local hub, NATS adapter, presence, metrics.

Layout: ``core/`` holds the decisions and the wire protocols (no sockets, no event loop); ``io/`` holds
thin shells around them: the WebSocket connection layer, the data plane's NATS connection, nats-py for
JetStream and KV; :mod:`gateway.node` wires them and owns the lifecycle. ``prism gateway`` (the
command lives in :mod:`shared.cli`, as does ``prism dev``) runs one node; so does ``python -m gateway``.
Nothing here imports ``notification_service/`` or ``loadtest/`` (tests/unit/test_layout.py).
"""
