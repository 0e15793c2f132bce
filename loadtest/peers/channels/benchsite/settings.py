"""Settings: no database, no middleware, channels_redis on the Redis the harness started."""

from __future__ import annotations

import os

SECRET_KEY = "benchmark-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["channels"]
DATABASES: dict[str, object] = {}
USE_TZ = True
ASGI_APPLICATION = "benchsite.asgi.application"

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [os.environ.get("PRISM_PEER_REDIS_URL", "redis://127.0.0.1:6379")],
            # The default of 100 queued messages per channel would drop (group_send) or refuse (send)
            # what the scenarios keep in flight: up to 2,000 messages, all for this one process's channel.
            "capacity": 100_000,
        },
    }
}
