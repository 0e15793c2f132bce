"""The Prism gateway node: WebSocket termination, local hub, NATS adapter, presence, metrics.

Layout: ``core/`` holds the decisions (no sockets, no event loop); ``io/`` holds thin shells around
websockets and nats-py; :mod:`gateway.node` wires them and owns the lifecycle; :mod:`gateway.cli` is the
``prism`` command.
"""
