//! Token buckets by key (an app, or an app's user): `rate` tokens a second, bursts up to
//! `burst`. A request takes as many tokens as it carries events (or one, for a call that costs a
//! request to Zalo); when there are not enough, the caller answers 429 with the wait. Keys come
//! from clients, so the map is bounded: past [`MAX_KEYS`] buckets, full ones (nobody waiting on
//! them) are dropped.

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

/// Buckets kept before the full ones are dropped.
pub const MAX_KEYS: usize = 100_000;

impl RateLimiter {
    /// `rate` a second; 0 means no limit.
    pub fn new(rate: u32, burst: u32) -> RateLimiter {
        RateLimiter { rate: f64::from(rate), burst: f64::from(burst.max(rate)), buckets: Mutex::new(HashMap::new()) }
    }

    /// `per_minute` a minute, bursts up to `burst`.
    pub fn per_minute(per_minute: u32, burst: u32) -> RateLimiter {
        RateLimiter { rate: f64::from(per_minute) / 60.0, burst: f64::from(burst.max(1)), buckets: Mutex::new(HashMap::new()) }
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
        if buckets.len() >= MAX_KEYS && !buckets.contains_key(app) {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, b| b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < burst);
        }
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

    #[test]
    fn per_minute_buckets_and_a_bounded_map() {
        let rl = RateLimiter::per_minute(6, 2);
        let t0 = Instant::now();
        assert!(rl.take_at("u", 2, t0).is_ok());
        let wait = rl.take_at("u", 1, t0).unwrap_err();
        assert!((wait.as_secs_f64() - 10.0).abs() < 1e-6, "{wait:?}");
        // Keys from clients: past MAX_KEYS, full buckets go and the ones still waiting stay.
        for i in 0..MAX_KEYS + 10 {
            rl.take_at(&format!("k{i}"), 0, t0).unwrap();
        }
        assert!(rl.buckets.lock().unwrap().len() <= MAX_KEYS + 1);
        assert!(rl.take_at("u", 1, t0).is_err(), "the bucket still waiting was kept");
    }
}
