"""The reference backend: notifications delivered now if the user is online, from an inbox if not.

Backends publish ``{"id","payload","ttl"?}`` on ``notify.user.<id>``, ``notify.room.<room>`` or
``notify.broadcast`` (the JetStream stream ``NOTIFICATIONS``); ``prism notify`` instances share one durable
consumer, deliver through the gateways with receipts, keep an inbox per offline user and replay it on the
user's next ``client.connect``. See ``docs/notifications.md``.

``core`` holds the decisions (no I/O); ``streams``, ``receipts``, ``inbox``, ``worker``, ``lifecycle``,
``http`` and ``metrics`` are the thin shells; ``service`` owns the lifecycle; ``publisher`` is a helper for
backends written in Python.
"""
