//! A budget per client address for starting logins.
//!
//! Each `GET /saml/login` that starts a login makes the gateway keep something for a client
//! nobody has authenticated yet: a pending request in the store (ten minutes) and a
//! `login_start` audit record. Without a bound, one client could fill a Redis server that
//! refuses writes when full (and then signed-in users' requests fail too), or the memory
//! store's cap on pending requests (and then nobody can sign in).
//!
//! The budget is a generic cell rate algorithm: `per_minute` starts at once, then one every
//! `60 / per_minute` seconds. A client is its IPv4 address, or its IPv6 /64 (the block one host
//! is usually given, so that a host cannot step through its own addresses). A refused start is
//! answered `429` with `Retry-After`; only the first refusal of a run is audited, so that a
//! flood cannot fill the disk instead.
//!
//! The table of clients is bounded. When it is full, clients whose budget has fully recovered
//! are dropped (at most once a second); a new client that still finds no room is let through
//! untracked, since refusing it would lock out every newcomer during a spread-out flood, and
//! the store's own cap still stands behind it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most clients tracked at once.
const MAX_CLIENTS: usize = 100_000;

/// Least time between two sweeps of recovered clients, in milliseconds.
const SWEEP_EVERY_MS: u64 = 1_000;

/// A client as the budget counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Client {
    V4(u32),
    V6(u64),
}

impl Client {
    fn of(ip: IpAddr) -> Client {
        match ip {
            IpAddr::V4(v4) => Client::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Client::V4(u32::from(v4)),
                None => Client::V6((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

/// What the budget knows of one client.
#[derive(Debug, Clone, Copy)]
struct Budget {
    /// When the client's budget is next whole again, in ms since the limiter began; a start
    /// is allowed while this is at most `burst_ms` ahead of now.
    recovered_at: u64,
    /// A refusal of the current run was audited already.
    refusal_audited: bool,
}

/// The answer for one login start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the budget: go on.
    Allowed,
    /// Over the budget.
    Refused {
        /// When a start will be allowed again.
        retry_after: Duration,
        /// The first refusal of this run: audit it.
        audit: bool,
    },
}

/// The per-client budget for login starts.
#[derive(Debug)]
pub struct LoginLimiter {
    per_minute: u32,
    /// Time one start costs.
    interval_ms: u64,
    /// How far ahead `recovered_at` may be and a start still be allowed.
    burst_ms: u64,
    began: Instant,
    table: Mutex<Table>,
}

/// The clients and when they were last swept.
#[derive(Debug, Default)]
struct Table {
    clients: HashMap<Client, Budget>,
    swept_at: Option<u64>,
}

impl LoginLimiter {
    /// A budget of `per_minute` starts per client (at least 1).
    pub fn new(per_minute: u32) -> LoginLimiter {
        let per_minute = per_minute.max(1);
        let interval_ms = 60_000 / u64::from(per_minute);
        LoginLimiter {
            per_minute,
            interval_ms,
            burst_ms: interval_ms * u64::from(per_minute - 1),
            began: Instant::now(),
            table: Mutex::default(),
        }
    }

    /// The starts allowed per minute.
    pub fn per_minute(&self) -> u32 {
        self.per_minute
    }

    /// Counts a login start by `ip` now.
    pub fn check(&self, ip: IpAddr) -> Verdict {
        let now = u64::try_from(self.began.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.check_at(ip, now)
    }

    fn check_at(&self, ip: IpAddr, now: u64) -> Verdict {
        let client = Client::of(ip);
        let mut table = self
            .table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !table.clients.contains_key(&client) && table.clients.len() >= MAX_CLIENTS {
            table.sweep(now);
            if table.clients.len() >= MAX_CLIENTS {
                return Verdict::Allowed;
            }
        }
        let budget = table.clients.entry(client).or_insert(Budget {
            recovered_at: now,
            refusal_audited: false,
        });
        let recovered_at = budget.recovered_at.max(now);
        if recovered_at - now > self.burst_ms {
            let audit = !budget.refusal_audited;
            budget.refusal_audited = true;
            return Verdict::Refused {
                retry_after: Duration::from_millis(recovered_at - now - self.burst_ms),
                audit,
            };
        }
        *budget = Budget {
            recovered_at: recovered_at + self.interval_ms,
            refusal_audited: false,
        };
        Verdict::Allowed
    }
}

impl Table {
    /// Drops the clients whose budget is whole again, unless that was done within the last
    /// second (a sweep walks the whole table under the lock).
    fn sweep(&mut self, now: u64) {
        if self
            .swept_at
            .is_some_and(|at| now.saturating_sub(at) < SWEEP_EVERY_MS)
        {
            return;
        }
        self.swept_at = Some(now);
        self.clients.retain(|_, b| b.recovered_at > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn refused(v: Verdict) -> bool {
        matches!(v, Verdict::Refused { .. })
    }

    #[test]
    fn a_burst_of_the_budget_then_one_per_interval() {
        let limiter = LoginLimiter::new(6); // one per 10 s, six at once
        let client = ip("192.0.2.1");
        for _ in 0..6 {
            assert_eq!(limiter.check_at(client, 0), Verdict::Allowed);
        }
        assert_eq!(
            limiter.check_at(client, 0),
            Verdict::Refused {
                retry_after: Duration::from_secs(10),
                audit: true
            }
        );
        // Later refusals of the same run are not audited again.
        assert_eq!(
            limiter.check_at(client, 4_000),
            Verdict::Refused {
                retry_after: Duration::from_secs(6),
                audit: false
            }
        );
        assert_eq!(limiter.check_at(client, 10_000), Verdict::Allowed);
        assert!(refused(limiter.check_at(client, 10_000)));
        // A minute of quiet makes the budget whole again.
        for _ in 0..6 {
            assert_eq!(limiter.check_at(client, 80_000), Verdict::Allowed);
        }
        let Verdict::Refused { audit, .. } = limiter.check_at(client, 80_000) else {
            panic!("the seventh start of a burst is refused");
        };
        assert!(audit, "a new run's first refusal is audited");
    }

    #[test]
    fn clients_have_budgets_of_their_own() {
        let limiter = LoginLimiter::new(1);
        assert_eq!(limiter.check_at(ip("192.0.2.1"), 0), Verdict::Allowed);
        assert!(refused(limiter.check_at(ip("192.0.2.1"), 0)));
        assert_eq!(limiter.check_at(ip("192.0.2.2"), 0), Verdict::Allowed);
    }

    #[test]
    fn an_ipv6_host_is_its_64_and_mapped_ipv4_is_ipv4() {
        let limiter = LoginLimiter::new(1);
        assert_eq!(limiter.check_at(ip("2001:db8:1:2::1"), 0), Verdict::Allowed);
        assert!(refused(limiter.check_at(ip("2001:db8:1:2:ffff::9"), 0)));
        assert_eq!(limiter.check_at(ip("2001:db8:1:3::1"), 0), Verdict::Allowed);
        assert_eq!(limiter.check_at(ip("198.51.100.7"), 0), Verdict::Allowed);
        assert!(refused(limiter.check_at(ip("::ffff:198.51.100.7"), 0)));
    }

    #[test]
    fn a_full_table_drops_recovered_clients_and_lets_newcomers_through() {
        let limiter = LoginLimiter::new(1);
        for n in 0..MAX_CLIENTS as u32 {
            let client = IpAddr::from(std::net::Ipv4Addr::from(n));
            assert_eq!(limiter.check_at(client, 0), Verdict::Allowed);
        }
        // Full, nobody recovered yet: a newcomer goes through untracked, every time.
        let newcomer = ip("203.0.113.9");
        assert_eq!(limiter.check_at(newcomer, 1), Verdict::Allowed);
        assert_eq!(limiter.check_at(newcomer, 2), Verdict::Allowed);
        // Tracked clients keep their budget.
        assert!(refused(limiter.check_at(ip("0.0.0.5"), 3)));
        // Once the others have recovered (and a second has passed), room is made.
        assert_eq!(limiter.check_at(newcomer, 60_001), Verdict::Allowed);
        assert!(refused(limiter.check_at(newcomer, 60_001)));
        let table = limiter.table.lock().unwrap();
        assert!(table.clients.len() < 10, "{}", table.clients.len());
    }
}
