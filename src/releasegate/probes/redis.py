"""Redis: does it answer PING, and how fast."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import redis

from releasegate.config import RedisSettings
from releasegate.errors import ProbeError
from releasegate.redaction import redact


class Redis:
    def __init__(self, settings: RedisSettings) -> None:
        self.settings = settings
        parts = urlsplit(settings.url)
        self.where = f"{parts.hostname}:{parts.port or 6379}"

    @property
    def source(self) -> str:
        return redact(f"{self.settings.url} PING")

    def ping(self) -> tuple[str, float]:
        """The reply to PING (``PONG`` when healthy) and the round trip in milliseconds."""
        password = self.settings.password.resolve() if self.settings.password else None
        client = redis.Redis.from_url(
            self.settings.url,
            password=password,
            socket_timeout=self.settings.timeout_s,
            socket_connect_timeout=self.settings.timeout_s,
            retry_on_timeout=False,
        )
        started = time.perf_counter()
        try:
            reply = client.execute_command("PING")
        except redis.exceptions.TimeoutError:
            raise ProbeError(
                f"Redis at {self.where}", f"no answer within {self.settings.timeout_s:g} s"
            ) from None
        except redis.exceptions.AuthenticationError:
            raise ProbeError(
                f"Redis at {self.where}", "authentication failed", "check redis.password"
            ) from None
        except redis.exceptions.RedisError as exc:
            raise ProbeError(
                f"Redis at {self.where}", redact(str(exc).splitlines()[0]), "is it running? check redis.url"
            ) from None
        finally:
            client.close()
        elapsed_ms = (time.perf_counter() - started) * 1000
        text = reply.decode() if isinstance(reply, bytes) else ("PONG" if reply is True else str(reply))
        return text, elapsed_ms
