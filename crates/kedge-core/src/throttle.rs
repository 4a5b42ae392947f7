//! A token bucket for a node that floods: each message takes a token; tokens refill at `rate`
//! per second up to `burst`. A message without a token is not dropped: the caller waits the
//! returned time before reading more from that node, so the flood slows to `rate` through TCP
//! back-pressure and nothing is lost. Time is passed in, so this is tested without a clock.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Duration,
}

impl TokenBucket {
    /// A full bucket at time `now`. A zero rate means unlimited.
    pub fn new(rate_per_sec: u32, burst: u32, now: Duration) -> TokenBucket {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            rate: f64::from(rate_per_sec),
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes a token at `now`; returns how long to wait before handling the message, if at all.
    pub fn take(&mut self, now: Duration) -> Option<Duration> {
        self.take_n(1, now)
    }

    /// Takes `n` tokens at `now` (bytes of a stream paced in KiB, say); how long to wait first.
    pub fn take_n(&mut self, n: u32, now: Duration) -> Option<Duration> {
        if self.rate <= 0.0 {
            return None;
        }
        let elapsed = now.saturating_sub(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst) - f64::from(n);
        (self.tokens < 0.0).then(|| Duration::from_secs_f64(-self.tokens / self.rate))
    }

    /// Takes a token at `now` if there is one; a refused call takes none (for callers that are
    /// told "too many requests" rather than slowed down).
    pub fn try_take(&mut self, now: Duration) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        let elapsed = now.saturating_sub(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        let ok = self.tokens >= 1.0;
        if ok {
            self.tokens -= 1.0;
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_burst_passes_then_messages_wait_their_turn() {
        let mut b = TokenBucket::new(100, 5, Duration::ZERO);
        for _ in 0..5 {
            assert_eq!(b.take(Duration::ZERO), None);
        }
        // 100/s: the 6th waits 10 ms, the 7th 20 ms (each reserves the next token).
        assert_eq!(b.take(Duration::ZERO), Some(10 * MS));
        assert_eq!(b.take(Duration::ZERO), Some(20 * MS));
    }

    #[test]
    fn many_tokens_at_once_wait_for_all_of_them() {
        let mut b = TokenBucket::new(1000, 100, Duration::ZERO);
        assert_eq!(b.take_n(100, Duration::ZERO), None);
        assert_eq!(b.take_n(500, Duration::ZERO), Some(500 * MS));
    }

    #[test]
    fn tokens_refill_up_to_the_burst() {
        let mut b = TokenBucket::new(100, 2, Duration::ZERO);
        assert_eq!(b.take(Duration::ZERO), None);
        assert_eq!(b.take(Duration::ZERO), None);
        // A long pause refills two tokens, not more.
        let later = Duration::from_secs(60);
        assert_eq!(b.take(later), None);
        assert_eq!(b.take(later), None);
        assert!(b.take(later).is_some());
    }

    #[test]
    fn a_steady_rate_under_the_limit_never_waits() {
        let mut b = TokenBucket::new(1000, 1, Duration::ZERO);
        for i in 1..10_000u64 {
            assert_eq!(b.take(Duration::from_millis(i)), None, "message {i}");
        }
    }

    #[test]
    fn zero_rate_is_unlimited_and_time_going_back_is_harmless() {
        let mut b = TokenBucket::new(0, 1, Duration::ZERO);
        for _ in 0..1000 {
            assert_eq!(b.take(Duration::ZERO), None);
        }
        let mut b = TokenBucket::new(10, 1, Duration::from_secs(5));
        assert_eq!(b.take(Duration::from_secs(5)), None);
        assert!(b.take(Duration::from_secs(1)).is_some());
    }

    #[test]
    fn try_take_refuses_without_running_into_debt() {
        let t0 = Duration::ZERO;
        let mut b = TokenBucket::new(10, 2, t0);
        assert!(b.try_take(t0) && b.try_take(t0));
        assert!(!b.try_take(t0));
        assert!(!b.try_take(t0), "still empty, no debt taken");
        assert!(
            b.try_take(Duration::from_millis(100)),
            "one token back after 100 ms"
        );
    }
}
