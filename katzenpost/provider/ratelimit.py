"""The per-client-connection send rate limiter (a token bucket), as the reference provider: the
listener-wide rate (SEND_RATE or the document's SendRatePerMinute) and burst (SEND_BURST only)
are read at each (re-)authentication; with burst 0 or rate 0 the limiter is off."""
from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class RateSettings:
    """Shared by every client connection of a provider; changed live by the management socket
    (SEND_RATE / SEND_BURST) and by a new PKI document's SendRatePerMinute."""

    send_rate_per_minute: int = 0
    send_burst: int = 0
    disabled: bool = False  # [Debug] DisableRateLimit


@dataclass
class RateLimiter:
    """One client connection's token bucket; times in monotonic milliseconds."""

    settings: RateSettings
    clock: callable = field(default=lambda: time.monotonic_ns() // 1_000_000)
    increment_ms: int = 0   # one token per increment; 0 = not limited
    tokens: int = 0
    max_tokens: int = 0
    last_ms: int = 0

    def refresh(self) -> None:
        """Called at the handshake and every re-authentication (the reference's IsPeerValid)."""
        if self.settings.disabled:
            return
        rate, burst = self.settings.send_rate_per_minute, self.settings.send_burst
        # Rate 0 would divide by zero in the reference: treat it, like burst 0, as "off".
        increment = 60_000 // rate if rate > 0 else 0
        if increment == 0 or burst == 0:
            self.increment_ms = self.tokens = self.max_tokens = 0
            return
        if self.increment_ms == 0:
            self.tokens, self.last_ms = 1, self.clock()
        self.increment_ms, self.max_tokens = increment, burst
        self.tokens = min(self.tokens, burst)

    def allow(self) -> bool:
        """True to accept one SendPacket; False means drop it silently (the session stays)."""
        if self.increment_ms == 0:
            return True
        now = self.clock()
        earned, _ = divmod(now - self.last_ms, self.increment_ms)
        if earned > 0:
            self.tokens = min(self.max_tokens, self.tokens + earned)
            self.last_ms += earned * self.increment_ms
        if self.tokens == 0:
            return False
        self.tokens -= 1
        return True
