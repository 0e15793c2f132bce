"""The ASGI application: ``/ws`` is the benchmark consumer, like Prism's endpoint."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application  # type: ignore[import-not-found]

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchsite.settings")
django_http = get_asgi_application()  # sets Django up, which the consumer's imports need first

from channels.routing import ProtocolTypeRouter, URLRouter  # type: ignore[import-untyped]  # noqa: E402
from django.urls import path  # type: ignore[import-not-found]  # noqa: E402

from .consumers import BenchConsumer  # noqa: E402

application = ProtocolTypeRouter(
    {"http": django_http, "websocket": URLRouter([path("ws", BenchConsumer.as_asgi())])}
)
