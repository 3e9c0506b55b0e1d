//! A budget per client address for starting logins.
//!
//! Each `GET /saml/login` that starts a login makes the gateway keep something for a client
//! nobody has authenticated yet: a pending request in the store (ten minutes) and a
//! `login_start` audit record. Without a bound, one client could push real users' pending
//! logins out of the stores' caps (they then start again), and fill the audit log. Every
//! request to `/saml/login` is charged, whatever it leads to. So is every `POST /saml/acs`
//! that answers no login started here (no RelayState bound to the browser, an unknown or used
//! one, a malformed form): it would otherwise cost a parse, or a whole signature check where
//! IdP-initiated logins are on, and an audit record, each. A response to a login started here
//! was paid for at its start. Every refused message to `/saml/slo` is charged too, for the
//! same reason (a valid one never is, so that a logout always takes effect).
//!
//! The budget is a generic cell rate algorithm: `per_minute` starts at once, then one every
//! `60 / per_minute` seconds. A client is its IPv4 address, or its IPv6 /64 (the block one host
//! is usually given, so that a host cannot step through its own addresses). An IPv6 start is
//! also charged to its /48 (a site), which gets [`SITE_SHARE`] times the budget: a site has many
//! hosts, but whoever holds a /48 must not get the budgets of its 65,536 /64s. A refused start is
//! answered `429` with `Retry-After`; only the first refusal of a run is audited, so that a
//! flood cannot fill the disk instead.
//!
//! The table of clients is bounded. When it is full, clients whose budget has fully recovered
//! are dropped (at most once a second); a new client that still finds no room is let through
//! untracked, since refusing it would lock out every newcomer during a spread-out flood, and
//! the store's own cap still stands behind it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most clients tracked at once.
const MAX_CLIENTS: usize = 100_000;

/// Least time between two sweeps of recovered clients, in microseconds.
const SWEEP_EVERY_US: u64 = 1_000_000;

/// Least time between two warnings that the table is full, in microseconds.
const WARN_EVERY_US: u64 = 60_000_000;

/// How many budgets of one client an IPv6 /48 gets.
pub const SITE_SHARE: u32 = 16;

/// What a start is charged to: a client (an IPv4 address or an IPv6 /64), or an IPv6 site (/48).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Client {
    V4(u32),
    V6(u64),
    V6Site(u64),
}

impl Client {
    /// The client `ip` is (IPv4 written as IPv6 is IPv4), and for IPv6 the site it is in.
    fn of(ip: IpAddr) -> (Client, Option<Client>) {
        match ip.to_canonical() {
            IpAddr::V4(v4) => (Client::V4(u32::from(v4)), None),
            IpAddr::V6(v6) => {
                let bits = u128::from(v6);
                let prefix = |len: u32| (bits >> (128 - len)) as u64;
                (Client::V6(prefix(64)), Some(Client::V6Site(prefix(48))))
            }
        }
    }
}

/// The pace of one budget: what one start costs and how far ahead a start may reach, in µs.
#[derive(Debug, Clone, Copy)]
struct Pace {
    interval_us: u64,
    burst_us: u64,
}

impl Pace {
    fn per_minute(starts: u64) -> Pace {
        let interval_us = 60_000_000 / starts;
        Pace {
            interval_us,
            burst_us: interval_us * (starts - 1),
        }
    }
}

/// What the budget knows of one client.
#[derive(Debug, Clone, Copy)]
struct Budget {
    /// When the client's budget is next whole again, in µs since the limiter began; a start
    /// is allowed while this is at most `burst_us` ahead of now.
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
    /// The pace of a client's budget.
    client: Pace,
    /// The pace of an IPv6 site's budget.
    site: Pace,
    began: Instant,
    table: Mutex<Table>,
    /// Starts refused since start-up.
    refused: AtomicU64,
    /// Starts let through untracked because the table was full, since start-up.
    untracked: AtomicU64,
}

/// The clients, when they were last swept, and when a full table was last warned of.
#[derive(Debug, Default)]
struct Table {
    clients: HashMap<Client, Budget>,
    swept_at: Option<u64>,
    warned_at: Option<u64>,
}

impl LoginLimiter {
    /// A budget of `per_minute` starts per client (at least 1).
    pub fn new(per_minute: u32) -> LoginLimiter {
        let per_minute = per_minute.max(1);
        LoginLimiter {
            per_minute,
            client: Pace::per_minute(u64::from(per_minute)),
            site: Pace::per_minute(u64::from(per_minute) * u64::from(SITE_SHARE)),
            began: Instant::now(),
            table: Mutex::default(),
            refused: AtomicU64::new(0),
            untracked: AtomicU64::new(0),
        }
    }

    /// The starts allowed per minute.
    pub fn per_minute(&self) -> u32 {
        self.per_minute
    }

    /// Starts refused since start-up.
    pub fn refused_total(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Starts let through untracked (the table of clients was full) since start-up.
    pub fn untracked_total(&self) -> u64 {
        self.untracked.load(Ordering::Relaxed)
    }

    /// Counts a login start by `ip` now.
    pub fn check(&self, ip: IpAddr) -> Verdict {
        self.check_at(ip, self.now())
    }

    /// The refusal of `ip` that [`Verdict::Refused`] asked to audit could not be audited: the
    /// next refusal of its run asks again.
    pub fn audit_failed(&self, ip: IpAddr) {
        let mut table = self.lock();
        if let Some(budget) = table.clients.get_mut(&Client::of(ip).0) {
            budget.refusal_audited = false;
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.began.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn check_at(&self, ip: IpAddr, now: u64) -> Verdict {
        let (client, site) = Client::of(ip);
        let keys = [Some((client, self.client)), site.map(|s| (s, self.site))];
        let keys = keys.iter().flatten();
        let mut table = self.lock();
        let new = keys.clone().any(|(k, _)| !table.clients.contains_key(k));
        if new && table.clients.len() >= MAX_CLIENTS {
            table.sweep(now);
            if table.clients.len() >= MAX_CLIENTS {
                self.untracked.fetch_add(1, Ordering::Relaxed);
                if table
                    .warned_at
                    .is_none_or(|at| now.saturating_sub(at) >= WARN_EVERY_US)
                {
                    table.warned_at = Some(now);
                    tracing::warn!(
                        clients = MAX_CLIENTS,
                        "the login budget tracks as many client addresses as it can; logins \
                         from new addresses go unlimited until some recover (a flood from many \
                         addresses?)"
                    );
                }
                return Verdict::Allowed;
            }
        }
        // The longest wait among the budgets the start is charged to; nothing is charged
        // unless every one allows it.
        let wait = keys
            .clone()
            .filter_map(|(key, pace)| {
                let recovered_at = table.clients.get(key).map_or(now, |b| b.recovered_at);
                let ahead = recovered_at.saturating_sub(now);
                (ahead > pace.burst_us).then(|| ahead - pace.burst_us)
            })
            .max();
        if let Some(wait) = wait {
            // One run of refusals per client, whichever budget refused it.
            let budget = table.clients.entry(client).or_insert(Budget {
                recovered_at: now,
                refusal_audited: false,
            });
            let audit = !budget.refusal_audited;
            budget.refusal_audited = true;
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Verdict::Refused {
                retry_after: Duration::from_micros(wait),
                audit,
            };
        }
        for (key, pace) in keys {
            let budget = table.clients.entry(*key).or_insert(Budget {
                recovered_at: now,
                refusal_audited: false,
            });
            *budget = Budget {
                recovered_at: budget.recovered_at.max(now) + pace.interval_us,
                refusal_audited: false,
            };
        }
        Verdict::Allowed
    }
}

impl Table {
    /// Drops the clients whose budget is whole again, unless that was done within the last
    /// second (a sweep walks the whole table under the lock).
    fn sweep(&mut self, now: u64) {
        if self
            .swept_at
            .is_some_and(|at| now.saturating_sub(at) < SWEEP_EVERY_US)
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

    /// A millisecond in the limiter's clock.
    const MS: u64 = 1_000;

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
            limiter.check_at(client, 4_000 * MS),
            Verdict::Refused {
                retry_after: Duration::from_secs(6),
                audit: false
            }
        );
        assert_eq!(limiter.check_at(client, 10_000 * MS), Verdict::Allowed);
        assert!(refused(limiter.check_at(client, 10_000 * MS)));
        // A minute of quiet makes the budget whole again.
        for _ in 0..6 {
            assert_eq!(limiter.check_at(client, 80_000 * MS), Verdict::Allowed);
        }
        let Verdict::Refused { audit, .. } = limiter.check_at(client, 80_000 * MS) else {
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
    fn an_ipv6_site_gets_sixteen_budgets_not_one_per_64() {
        let limiter = LoginLimiter::new(1);
        let host = |n: u32| ip(&format!("2001:db8:7:{n:x}::1"));
        for n in 0..SITE_SHARE {
            assert_eq!(
                limiter.check_at(host(n), 0),
                Verdict::Allowed,
                "/64 number {n}"
            );
        }
        // The site's budget is spent: a /64 of it that never started a login is refused, and
        // audited as its own run.
        assert_eq!(
            limiter.check_at(host(SITE_SHARE), 0),
            Verdict::Refused {
                retry_after: Duration::from_micros(60_000_000 / u64::from(SITE_SHARE)),
                audit: true
            }
        );
        // Nothing was charged for the refusal: after one site interval, it goes through.
        let later = 60_000_000 / u64::from(SITE_SHARE);
        assert_eq!(limiter.check_at(host(SITE_SHARE), later), Verdict::Allowed);
        // Another site is not affected.
        assert_eq!(limiter.check_at(ip("2001:db8:8::1"), 0), Verdict::Allowed);
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
        assert_eq!(limiter.check_at(newcomer, MS), Verdict::Allowed);
        assert_eq!(limiter.check_at(newcomer, 2 * MS), Verdict::Allowed);
        assert_eq!(limiter.untracked_total(), 2);
        // Tracked clients keep their budget.
        assert!(refused(limiter.check_at(ip("0.0.0.5"), 3 * MS)));
        // Once the others have recovered (and a second has passed), room is made.
        assert_eq!(limiter.check_at(newcomer, 60_001 * MS), Verdict::Allowed);
        assert!(refused(limiter.check_at(newcomer, 60_001 * MS)));
        let table = limiter.table.lock().unwrap();
        assert!(table.clients.len() < 10, "{}", table.clients.len());
    }

    #[test]
    fn refusals_and_untracked_starts_are_counted() {
        let limiter = LoginLimiter::new(1);
        let client = ip("192.0.2.1");
        assert_eq!(limiter.check_at(client, 0), Verdict::Allowed);
        for _ in 0..3 {
            assert!(refused(limiter.check_at(client, 0)));
        }
        assert_eq!(limiter.refused_total(), 3);
        assert_eq!(limiter.untracked_total(), 0);
        // A refusal whose record could not be written is asked to be audited again.
        limiter.audit_failed(client);
        let Verdict::Refused { audit, .. } = limiter.check_at(client, 0) else {
            panic!("still over the budget");
        };
        assert!(audit);
    }

    #[test]
    fn a_large_budget_keeps_its_rate() {
        // 40,000 a minute: one every 1.5 ms, which whole milliseconds could not express.
        let limiter = LoginLimiter::new(40_000);
        let client = ip("192.0.2.1");
        for _ in 0..40_000 {
            assert_eq!(limiter.check_at(client, 0), Verdict::Allowed);
        }
        assert!(refused(limiter.check_at(client, MS)));
        assert_eq!(limiter.check_at(client, 1_500), Verdict::Allowed);
        assert!(refused(limiter.check_at(client, 2_999)));
        assert_eq!(limiter.check_at(client, 3_000), Verdict::Allowed);
    }
}
