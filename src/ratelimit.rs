//! Write rate limiting: a token bucket per visitor and per client IP.
//!
//! A bucket holds up to a minute's allowance and refills continuously, so a
//! burst of clicks is fine and a script flooding the board is slowed to the
//! configured rate. A classroom behind one NAT address shares the IP bucket,
//! which is therefore [`IP_FACTOR`] times larger than a visitor's.
//!
//! The same buckets count failed moderator logins per IP ([`RateLimiter::peek`]
//! and [`RateLimiter::spend`]): only failures take from the bucket, and an
//! empty one refuses every attempt, right or wrong, until it refills.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// How many visitors' worth of writes one IP address may make.
pub const IP_FACTOR: u32 = 20;
/// Forget idle buckets once this many are tracked (they refill to full anyway).
const SWEEP_AT: usize = 10_000;

struct Bucket {
    /// Writes left now (fractional: the bucket refills continuously).
    tokens: f64,
    /// When `tokens` was last refilled.
    updated: Instant,
}

/// Per-key token buckets; `per_minute == 0` disables limiting.
pub struct RateLimiter {
    /// A visitor's rate (an IP gets `IP_FACTOR` times it); 0 turns limiting off.
    per_minute: u32,
    /// One bucket per visitor id and per IP, by key.
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    pub fn new(per_minute: u32) -> Self {
        RateLimiter {
            per_minute,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one write from both the visitor's and the IP's bucket. On refusal,
    /// returns the whole seconds until a write would be allowed.
    pub fn check(&self, visitor: &str, ip: &str) -> Result<(), u64> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = crate::lock::lock(&self.buckets);
        if buckets.len() > SWEEP_AT {
            let full_after = 60.0;
            buckets.retain(|_, b| now.duration_since(b.updated).as_secs_f64() < full_after);
        }
        let visitor_rate = f64::from(self.per_minute);
        let ip_rate = visitor_rate * f64::from(IP_FACTOR);
        let keys = [
            (format!("v:{visitor}"), visitor_rate),
            (format!("ip:{ip}"), ip_rate),
        ];
        // Check both before taking from either, so a refusal costs nothing.
        let mut wait = 0.0f64;
        for (key, rate) in &keys {
            let b = buckets.entry(key.clone()).or_insert(Bucket {
                tokens: *rate,
                updated: now,
            });
            let elapsed = now.duration_since(b.updated).as_secs_f64();
            b.tokens = (b.tokens + elapsed * rate / 60.0).min(*rate);
            b.updated = now;
            if b.tokens < 1.0 {
                wait = wait.max((1.0 - b.tokens) * 60.0 / rate);
            }
        }
        if wait > 0.0 {
            return Err(wait.ceil().max(1.0) as u64);
        }
        for (key, _) in &keys {
            if let Some(b) = buckets.get_mut(key) {
                b.tokens -= 1.0;
            }
        }
        Ok(())
    }

    /// Whether `key`'s own bucket (of the limiter's rate) holds a token,
    /// without taking it; else the whole seconds until it will. Always
    /// allowed when limiting is off.
    pub fn peek(&self, key: &str) -> Result<(), u64> {
        self.one(key, false)
    }

    /// Takes a token from `key`'s own bucket (if it has one left).
    pub fn spend(&self, key: &str) {
        let _ = self.one(key, true);
    }

    fn one(&self, key: &str, take: bool) -> Result<(), u64> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let now = Instant::now();
        let rate = f64::from(self.per_minute);
        let mut buckets = crate::lock::lock(&self.buckets);
        if buckets.len() > SWEEP_AT {
            buckets.retain(|_, b| now.duration_since(b.updated).as_secs_f64() < 60.0);
        }
        let b = buckets.entry(format!("one:{key}")).or_insert(Bucket {
            tokens: rate,
            updated: now,
        });
        let elapsed = now.duration_since(b.updated).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate / 60.0).min(rate);
        b.updated = now;
        if b.tokens < 1.0 {
            return Err(((1.0 - b.tokens) * 60.0 / rate).ceil().max(1.0) as u64);
        }
        if take {
            b.tokens -= 1.0;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A visitor gets a minute's allowance at once, then is refused with a wait.
    #[test]
    fn visitor_bucket_empties() {
        let limiter = RateLimiter::new(3);
        for _ in 0..3 {
            assert!(limiter.check("v", "1.2.3.4").is_ok());
        }
        let wait = limiter.check("v", "1.2.3.4").unwrap_err();
        assert!((1..=20).contains(&wait), "{wait}");
        // Another visitor behind the same address is still allowed.
        assert!(limiter.check("w", "1.2.3.4").is_ok());
    }

    /// The IP bucket caps many visitors behind one address.
    #[test]
    fn ip_bucket_caps_many_visitors() {
        let limiter = RateLimiter::new(1);
        let allowed = (0..100)
            .filter(|i| limiter.check(&i.to_string(), "ip").is_ok())
            .count();
        assert_eq!(allowed, IP_FACTOR as usize);
    }

    /// Peeking takes nothing; spending empties the bucket, and then even a
    /// peek is refused until it refills.
    #[test]
    fn peek_and_spend() {
        let limiter = RateLimiter::new(2);
        for _ in 0..10 {
            assert!(limiter.peek("ip").is_ok());
        }
        limiter.spend("ip");
        assert!(limiter.peek("ip").is_ok());
        limiter.spend("ip");
        let wait = limiter.peek("ip").unwrap_err();
        assert!((1..=30).contains(&wait), "{wait}");
        assert!(limiter.peek("other").is_ok());
    }

    /// A rate of 0 turns limiting off.
    #[test]
    fn zero_disables() {
        let limiter = RateLimiter::new(0);
        assert!((0..1000).all(|_| limiter.check("v", "ip").is_ok()));
    }
}
