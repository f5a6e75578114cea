//! Rate limiting with token buckets: writes per visitor and per client
//! address, and new visitors (issued cookies) per client address.
//!
//! A bucket holds up to a minute's allowance and refills continuously, so a
//! burst of clicks is fine and a script flooding the board is slowed to the
//! configured rate. A classroom behind one NAT address shares the address's
//! write bucket, which is therefore [`IP_FACTOR`] times larger than a
//! visitor's; and the same classroom arrives at once, which the new-visitor
//! bucket allows for by holding a whole minute's worth of newcomers.
//!
//! An "address" is an IPv4 address, or an IPv6 /64: one network, as one
//! household or classroom gets it, and one host can pick any address in its
//! /64, so counting addresses one by one would give it 2^64 allowances.
//!
//! Buckets live in this process: behind a balancer, each instance keeps its
//! own, so an address may make up to its allowance at each instance.
//!
//! The same buckets count failed moderator token checks per address
//! ([`RateLimiter::peek`] and [`RateLimiter::spend`]): only failures take
//! from the bucket, and an empty one refuses every attempt, right or wrong,
//! until it refills.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// How many visitors' worth of writes one IP address may make.
pub const IP_FACTOR: u32 = 20;
/// Forget idle buckets once this many are tracked (they refill to full anyway).
const SWEEP_AT: usize = 10_000;
/// Seconds in which an empty bucket refills to full, whatever its rate: each
/// holds one minute's allowance.
const FULL_AFTER_SECS: f64 = 60.0;

struct Bucket {
    /// Takes left now (fractional: the bucket refills continuously).
    tokens: f64,
    /// When `tokens` was last refilled.
    updated: Instant,
}

/// Per-key token buckets; a write rate of 0 turns all limiting off.
pub struct RateLimiter {
    /// A visitor's writes per minute (an address gets `IP_FACTOR` times it);
    /// 0 turns limiting off, new visitors included (benchmarks rely on that).
    per_minute: u32,
    /// New visitors per minute per address; 0 lets any number in.
    new_visitors_per_minute: u32,
    /// One bucket per visitor id, per address for writes and per address for
    /// new visitors, by key.
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// Writes per visitor per minute (`--write-rate`) and new visitors per
    /// address per minute (`--visitor-rate`).
    pub fn new(per_minute: u32, new_visitors_per_minute: u32) -> Self {
        RateLimiter {
            per_minute,
            new_visitors_per_minute,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one write from both the visitor's and the address's bucket. On
    /// refusal, returns the whole seconds until a write would be allowed.
    pub fn check(&self, visitor: &str, ip: &str) -> Result<(), u64> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let visitor_rate = f64::from(self.per_minute);
        let ip_rate = visitor_rate * f64::from(IP_FACTOR);
        self.take(&[
            (format!("v:{visitor}"), visitor_rate),
            (format!("ip:{}", network(ip)), ip_rate),
        ])
    }

    /// Takes one new visitor from the address's allowance: whether a request
    /// from `ip` without a cookie of ours may be issued one. Always yes when
    /// limiting is off.
    pub fn admit_new_visitor(&self, ip: &str) -> bool {
        if self.per_minute == 0 || self.new_visitors_per_minute == 0 {
            return true;
        }
        let rate = f64::from(self.new_visitors_per_minute);
        self.take(&[(format!("new:{}", network(ip)), rate)]).is_ok()
    }

    /// Takes one token from each of these buckets (key, allowance per
    /// minute), or from none: on refusal, the whole seconds until every one
    /// of them has a token.
    fn take(&self, keys: &[(String, f64)]) -> Result<(), u64> {
        let now = Instant::now();
        let mut buckets = crate::lock::lock(&self.buckets);
        if buckets.len() > SWEEP_AT {
            buckets.retain(|_, b| now.duration_since(b.updated).as_secs_f64() < FULL_AFTER_SECS);
        }
        // Check all before taking from any, so a refusal costs nothing.
        let mut wait = 0.0f64;
        for (key, rate) in keys {
            let b = buckets.entry(key.clone()).or_insert(Bucket {
                tokens: *rate,
                updated: now,
            });
            let elapsed = now.duration_since(b.updated).as_secs_f64();
            b.tokens = (b.tokens + elapsed * rate / FULL_AFTER_SECS).min(*rate);
            b.updated = now;
            if b.tokens < 1.0 {
                wait = wait.max((1.0 - b.tokens) * FULL_AFTER_SECS / rate);
            }
        }
        if wait > 0.0 {
            return Err(wait.ceil().max(1.0) as u64);
        }
        for (key, _) in keys {
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
        let key = format!("one:{}", network(key));
        let rate = f64::from(self.per_minute);
        if take {
            return self.take(&[(key, rate)]);
        }
        // A peek refills like a take, and takes nothing.
        let now = Instant::now();
        let mut buckets = crate::lock::lock(&self.buckets);
        let Some(b) = buckets.get_mut(&key) else {
            return Ok(());
        };
        let elapsed = now.duration_since(b.updated).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate / FULL_AFTER_SECS).min(rate);
        b.updated = now;
        if b.tokens < 1.0 {
            return Err(((1.0 - b.tokens) * FULL_AFTER_SECS / rate).ceil().max(1.0) as u64);
        }
        Ok(())
    }
}

/// The network a client address counts as: an IPv4 address itself (also
/// when written as an IPv4-mapped IPv6 address), an IPv6 address's /64.
/// Anything unparsable is its own key.
fn network(ip: &str) -> String {
    match ip.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
        Ok(IpAddr::V4(v4)) => v4.to_string(),
        Err(_) => ip.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A visitor gets a minute's allowance at once, then is refused with a wait.
    #[test]
    fn visitor_bucket_empties() {
        let limiter = RateLimiter::new(3, 60);
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
        let limiter = RateLimiter::new(1, 60);
        let allowed = (0..100)
            .filter(|i| limiter.check(&i.to_string(), "ip").is_ok())
            .count();
        assert_eq!(allowed, IP_FACTOR as usize);
    }

    /// Peeking takes nothing; spending empties the bucket, and then even a
    /// peek is refused until it refills.
    #[test]
    fn peek_and_spend() {
        let limiter = RateLimiter::new(2, 0);
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
        let limiter = RateLimiter::new(0, 60);
        assert!((0..1000).all(|_| limiter.check("v", "ip").is_ok()));
    }

    /// An address may bring a minute's worth of new visitors at once (a
    /// classroom arriving), then no more until its bucket refills; another
    /// address has its own allowance.
    #[test]
    fn new_visitors_per_address() {
        let limiter = RateLimiter::new(120, 60);
        let admitted = (0..100)
            .filter(|_| limiter.admit_new_visitor("192.0.2.1"))
            .count();
        assert_eq!(admitted, 60);
        assert!(limiter.admit_new_visitor("192.0.2.2"));
        // Issuing draws on its own bucket, not on the address's writes.
        assert!(limiter.check("v", "192.0.2.1").is_ok());
    }

    /// With `--write-rate 0` (benchmarks) or `--visitor-rate 0`, any number
    /// of new visitors is admitted.
    #[test]
    fn new_visitors_unlimited_when_off() {
        for limiter in [RateLimiter::new(0, 60), RateLimiter::new(120, 0)] {
            assert!((0..1000).all(|_| limiter.admit_new_visitor("192.0.2.1")));
        }
    }

    /// Addresses of one IPv6 /64 share their buckets; an IPv4-mapped address
    /// is its IPv4 address.
    #[test]
    fn an_ipv6_network_is_one_address() {
        assert_eq!(network("2001:db8:1:2::1"), network("2001:db8:1:2:ffff::9"));
        assert_ne!(network("2001:db8:1:2::1"), network("2001:db8:1:3::1"));
        assert_eq!(network("::ffff:192.0.2.1"), "192.0.2.1");
        assert_eq!(network("192.0.2.1"), "192.0.2.1");
        let limiter = RateLimiter::new(120, 2);
        assert!(limiter.admit_new_visitor("2001:db8::1"));
        assert!(limiter.admit_new_visitor("2001:db8::2"));
        assert!(!limiter.admit_new_visitor("2001:db8::3"));
    }
}
