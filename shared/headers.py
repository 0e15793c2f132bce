"""NATS header names Prism reads and writes (HTTP-style, case-sensitive as written here)."""

from __future__ import annotations

# Backend -> gateway
FRAME = "Prism-Frame"  # "binary" marks a binary payload; anything else (or absent) is a text frame
# When the backend published: unix time in seconds, a decimal ("1767225600.123456"). Optional; a node
# observes prism_delivery_latency_seconds only for messages that carry it.
SENT_AT = "Prism-Sent-At"
# Gateway -> backends, on client events, messages and lifecycle events
CONN = "Prism-Conn"
USER = "Prism-User"  # absent for anonymous connections
NODE = "Prism-Node"
ROUTE = "Prism-Route"
REMOTE = "Prism-Remote"  # "ip:port" of the client as the node saw it
EVENT = "Prism-Event"
# Gateway -> backend receipts and control replies
STATUS = "Status"  # NATS status header, as the server itself sets it

FRAME_BINARY = "binary"
FRAME_TEXT = "text"
