//! Per-app token buckets: `rate` events a second, bursts up to `burst`. A request takes as many
//! tokens as it carries events; when there are not enough, the caller answers 429 with the wait.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    /// `rate` 0 means no limit.
    pub fn new(rate: u32, burst: u32) -> RateLimiter {
        RateLimiter { rate: f64::from(rate), burst: f64::from(burst.max(rate)), buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes `n` tokens for `app`, or says how long until they would be there.
    pub fn take(&self, app: &str, n: usize) -> Result<(), Duration> {
        self.take_at(app, n, Instant::now())
    }

    fn take_at(&self, app: &str, n: usize, now: Instant) -> Result<(), Duration> {
        if self.rate == 0.0 {
            return Ok(());
        }
        // A request larger than the burst could never pass; let it through on a full bucket.
        let n = (n as f64).min(self.burst);
        let mut buckets = self.buckets.lock().expect("rate limiter lock");
        let b = buckets.entry(app.to_string()).or_insert(Bucket { tokens: self.burst, at: now });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.at = now;
        if b.tokens >= n {
            b.tokens -= n;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((n - b.tokens) / self.rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_pass_then_the_rate_holds() {
        let rl = RateLimiter::new(100, 200);
        let t0 = Instant::now();
        assert!(rl.take_at("a", 200, t0).is_ok());
        let wait = rl.take_at("a", 50, t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-6, "{wait:?}");
        // Other apps have their own bucket.
        assert!(rl.take_at("b", 200, t0).is_ok());
        // Half a second later, 50 tokens are back.
        assert!(rl.take_at("a", 50, t0 + Duration::from_millis(500)).is_ok());
        assert!(rl.take_at("a", 1, t0 + Duration::from_millis(500)).is_err());
    }

    #[test]
    fn zero_rate_means_unlimited() {
        let rl = RateLimiter::new(0, 0);
        assert!(rl.take("a", 1_000_000).is_ok());
    }
}
