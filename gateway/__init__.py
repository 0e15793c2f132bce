"""The Prism gateway node: WebSocket termination, local hub, NATS adapter, presence, metrics.

Layout: ``core/`` holds the decisions (no sockets, no event loop); ``io/`` holds thin shells around
websockets and nats-py; :mod:`gateway.node` wires them and owns the lifecycle. ``prism gateway`` (the
command lives in :mod:`shared.cli`, as does ``prism dev``) runs one node; so does ``python -m gateway``.
Nothing here imports ``notification_service/`` or ``loadtest/`` (tests/unit/test_layout.py).
"""
