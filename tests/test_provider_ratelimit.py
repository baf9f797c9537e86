"""The client send rate limiter: off by default (burst 0), token bucket once SEND_BURST is set,
live updates at re-authentication, DisableRateLimit, rate 0 from the document."""
from katzenpost.provider.ratelimit import RateLimiter, RateSettings


class Clock:
    def __init__(self):
        self.ms = 1_000_000

    def __call__(self):
        return self.ms


def limiter(rate, burst, disabled=False):
    clock = Clock()
    bucket = RateLimiter(RateSettings(rate, burst, disabled), clock)
    bucket.refresh()
    return bucket, clock


def test_off_until_a_burst_is_set_as_in_the_reference():
    bucket, _ = limiter(60, 0)
    assert all(bucket.allow() for _ in range(1000))


def test_rate_zero_from_the_document_means_off():
    bucket, _ = limiter(0, 10)
    assert all(bucket.allow() for _ in range(1000))


def test_disable_rate_limit_ignores_every_setting():
    bucket, _ = limiter(1, 1, disabled=True)
    assert all(bucket.allow() for _ in range(100))


def test_token_bucket_starts_with_one_token_and_refills_per_increment_up_to_burst():
    bucket, clock = limiter(60, 3)  # one token a second
    assert bucket.allow()
    assert not bucket.allow()  # dropped silently; the caller keeps the session
    clock.ms += 999
    assert not bucket.allow()
    clock.ms += 1
    assert bucket.allow() and not bucket.allow()
    clock.ms += 10_000  # ten increments earned, capped at the burst
    assert [bucket.allow() for _ in range(4)] == [True, True, True, False]


def test_partial_increments_are_kept_for_later():
    bucket, clock = limiter(60, 5)
    assert bucket.allow()
    clock.ms += 1500
    assert bucket.allow() and not bucket.allow()
    clock.ms += 500  # with the kept half increment: one more token
    assert bucket.allow()


def test_settings_reach_the_connection_at_refresh():
    settings = RateSettings(0, 0)
    clock = Clock()
    bucket = RateLimiter(settings, clock)
    bucket.refresh()
    assert all(bucket.allow() for _ in range(10))
    settings.send_rate_per_minute, settings.send_burst = 30, 2  # SEND_RATE, SEND_BURST
    assert all(bucket.allow() for _ in range(10))  # not yet: only at the next re-authentication
    bucket.refresh()
    assert bucket.allow() and not bucket.allow()
    clock.ms += 2000
    assert bucket.allow()
    settings.send_burst = 0
    bucket.refresh()
    assert all(bucket.allow() for _ in range(10))
