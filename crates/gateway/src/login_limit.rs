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
//! answered `429` with `Retry-After`. The first refusal of a run is audited at once; the later
//! ones are counted per client and endpoint ([`LoginLimiter::take_unaudited`]) and written as
//! summary records every [`SUMMARY_EVERY`] and at shutdown ([`crate::refusals`]), so that every
//! refusal is in the audit log while a flood costs a bounded number of records, not the disk.
//!
//! The table of clients is bounded. When it is full, clients whose budget has fully recovered
//! are dropped (at most once a second); a new client that still finds no room is let through
//! untracked, since refusing it would lock out every newcomer during a spread-out flood, and
//! the store's own cap still stands behind it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// Most clients tracked at once.
const MAX_CLIENTS: usize = 100_000;

/// Least time between two sweeps of recovered clients, in microseconds.
const SWEEP_EVERY_US: u64 = 1_000_000;

/// Least time between two warnings that the table is full, in microseconds.
const WARN_EVERY_US: u64 = 60_000_000;

/// How many budgets of one client an IPv6 /48 gets.
pub const SITE_SHARE: u32 = 16;

/// How often the refusals not audited one by one are written as summary records.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(60);

/// What is charged to a client's login budget: the endpoint that charged it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budgeted {
    /// A request to `/saml/login`.
    Login,
    /// A post to `/saml/acs` that answers no login started here.
    Acs,
    /// A refused message to `/saml/slo`.
    Slo,
}

impl Budgeted {
    /// Every endpoint, in the order of [`Unaudited::spans`].
    const ALL: [Budgeted; 3] = [Budgeted::Login, Budgeted::Acs, Budgeted::Slo];

    /// The endpoint's path, as audit records name it.
    pub fn path(self) -> &'static str {
        match self {
            Budgeted::Login => "/saml/login",
            Budgeted::Acs => "/saml/acs",
            Budgeted::Slo => "/saml/slo",
        }
    }

    /// The audit event of a refusal here: `slo` for a logout message, else `login_failure`.
    pub fn event(self) -> crate::audit::Event {
        match self {
            Budgeted::Slo => crate::audit::Event::Slo,
            Budgeted::Login | Budgeted::Acs => crate::audit::Event::LoginFailure,
        }
    }

    fn index(self) -> usize {
        match self {
            Budgeted::Login => 0,
            Budgeted::Acs => 1,
            Budgeted::Slo => 2,
        }
    }
}

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
#[derive(Debug, Clone)]
struct Budget {
    /// When the client's budget is next whole again, in µs since the limiter began; a start
    /// is allowed while this is at most `burst_us` ahead of now.
    recovered_at: u64,
    /// A refusal of the current run was audited already.
    refusal_audited: bool,
    /// Refusals since the last summary that were not audited one by one (boxed: few clients
    /// have any).
    unaudited: Option<Box<Unaudited>>,
}

impl Budget {
    fn new(now: u64) -> Budget {
        Budget {
            recovered_at: now,
            refusal_audited: false,
            unaudited: None,
        }
    }
}

/// One client's refusals that wait for their summary records.
#[derive(Debug, Clone, Copy)]
struct Unaudited {
    /// The address of the last one (for an IPv6 client, one address of its /64).
    ip: IpAddr,
    /// Per endpoint, in the order of [`Budgeted::ALL`].
    spans: [Span; 3],
}

/// How many refusals at one endpoint, and when the first and the last were, in µs since the
/// limiter began.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Span {
    count: u64,
    first: u64,
    last: u64,
}

/// Refusals of one client at one endpoint that were not audited one by one: the content of a
/// summary record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusalSummary {
    /// The client's address (of its last refusal).
    pub ip: IpAddr,
    /// The endpoint that was refused.
    pub charged: Budgeted,
    /// How many refusals.
    pub count: u64,
    /// When the first of them was refused.
    pub first: SystemTime,
    /// When the last of them was refused.
    pub last: SystemTime,
    /// The same, in the limiter's clock, for folding back into the overflow.
    span: Span,
}

/// Refusals at one endpoint not summarized per client: those of clients past
/// [`SUMMARIES_PER_PASS`] in one pass, and those whose summary could not be written. The
/// content of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusalOverflow {
    /// The endpoint that was refused.
    pub charged: Budgeted,
    /// How many summaries (client and endpoint) it stands for.
    pub summaries: u64,
    /// How many refusals.
    pub count: u64,
    /// When the first of them was refused.
    pub first: SystemTime,
    /// When the last of them was refused.
    pub last: SystemTime,
    span: Span,
}

/// What one pass of summaries writes: at most [`SUMMARIES_PER_PASS`] per client and endpoint,
/// and the rest together per endpoint.
#[derive(Debug, Default)]
pub struct Summaries {
    /// One per client and endpoint.
    pub each: Vec<RefusalSummary>,
    /// The rest, one per endpoint that has any.
    pub overflow: Vec<RefusalOverflow>,
}

/// Most summary records per client and endpoint written in one pass: a flood from many
/// addresses (or the /64s of one IPv6 site) costs at most this many records a minute, and the
/// rest one record together.
pub const SUMMARIES_PER_PASS: usize = 1_000;

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
    /// Held by a pass of summaries, so that the last pass at shutdown waits for one under way.
    summary_pass: tokio::sync::Mutex<()>,
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
    /// Refusals whose summaries could not be written, per endpoint: how many summaries, and
    /// their span.
    overflow: [Option<(u64, Span)>; 3],
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
            summary_pass: tokio::sync::Mutex::new(()),
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

    /// Counts a login start by `ip` now, charged by the endpoint `charged`.
    pub fn check(&self, ip: IpAddr, charged: Budgeted) -> Verdict {
        self.check_at(ip, charged, self.now())
    }

    /// Waits for the pass of summaries under way, if any, and holds off the next one.
    pub async fn summary_pass(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.summary_pass.lock().await
    }

    /// Takes the refusals that were not audited one by one (all but the first of each run):
    /// a summary per client and endpoint for the first [`SUMMARIES_PER_PASS`], the rest (and
    /// what could not be written before) as one overflow per endpoint.
    pub fn take_unaudited(&self) -> Summaries {
        let now = self.now();
        let (taken, mut overflow) = {
            let mut table = self.lock();
            let taken: Vec<Unaudited> = table
                .clients
                .values_mut()
                .filter_map(|b| b.unaudited.take())
                .map(|u| *u)
                .collect();
            (taken, std::mem::take(&mut table.overflow))
        };
        // Times in the limiter's clock, read as the wall clock now: a clock stepped since
        // start-up does not shift them.
        let wall_now = SystemTime::now();
        let wall = |us: u64| {
            let ago = Duration::from_micros(now.saturating_sub(us));
            wall_now.checked_sub(ago).unwrap_or(wall_now)
        };
        let mut each = Vec::new();
        for u in taken {
            for charged in Budgeted::ALL {
                let span = u.spans[charged.index()];
                if span.count == 0 {
                    continue;
                }
                if each.len() < SUMMARIES_PER_PASS {
                    each.push(RefusalSummary {
                        ip: u.ip,
                        charged,
                        count: span.count,
                        first: wall(span.first),
                        last: wall(span.last),
                        span,
                    });
                } else {
                    fold(&mut overflow[charged.index()], 1, span);
                }
            }
        }
        let overflow = Budgeted::ALL
            .into_iter()
            .filter_map(|charged| {
                let (summaries, span) = overflow[charged.index()]?;
                Some(RefusalOverflow {
                    charged,
                    summaries,
                    count: span.count,
                    first: wall(span.first),
                    last: wall(span.last),
                    span,
                })
            })
            .collect();
        Summaries { each, overflow }
    }

    /// A summary from [`LoginLimiter::take_unaudited`] could not be written: its refusals join
    /// the overflow of the next pass (a bounded count, whatever the number of clients).
    pub fn summary_failed(&self, summary: &RefusalSummary) {
        fold(
            &mut self.lock().overflow[summary.charged.index()],
            1,
            summary.span,
        );
    }

    /// The overflow record could not be written: its refusals join the next one.
    pub fn overflow_failed(&self, overflow: &RefusalOverflow) {
        let mut table = self.lock();
        let into = &mut table.overflow[overflow.charged.index()];
        fold(into, overflow.summaries, overflow.span);
    }

    /// The refusal of `ip` at `charged` that [`Verdict::Refused`] asked to audit could not be
    /// audited: it waits for a summary, and the next refusal of its run asks again.
    pub fn audit_failed(&self, ip: IpAddr, charged: Budgeted) {
        let now = self.now();
        let mut table = self.lock();
        if let Some(budget) = table.clients.get_mut(&Client::of(ip).0) {
            budget.refusal_audited = false;
            let span = Span {
                count: 1,
                first: now,
                last: now,
            };
            note_refusals(budget, ip, charged, span);
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

    fn check_at(&self, ip: IpAddr, charged: Budgeted, now: u64) -> Verdict {
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
            let budget = table.clients.entry(client).or_insert(Budget::new(now));
            let audit = !budget.refusal_audited;
            budget.refusal_audited = true;
            if !audit {
                let span = Span {
                    count: 1,
                    first: now,
                    last: now,
                };
                note_refusals(budget, ip, charged, span);
            }
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Verdict::Refused {
                retry_after: Duration::from_micros(wait),
                audit,
            };
        }
        for (key, pace) in keys {
            let budget = table.clients.entry(*key).or_insert(Budget::new(now));
            budget.recovered_at = budget.recovered_at.max(now) + pace.interval_us;
            budget.refusal_audited = false;
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
        // A client with refusals waiting for their summary stays until it is written.
        self.clients
            .retain(|_, b| b.recovered_at > now || b.unaudited.is_some());
    }
}

/// Adds `summaries` summaries of the refusals `span` to `overflow`.
fn fold(overflow: &mut Option<(u64, Span)>, summaries: u64, span: Span) {
    *overflow = Some(match overflow.take() {
        None => (summaries, span),
        Some((before, into)) => (before.saturating_add(summaries), merged(into, span)),
    });
}

/// The refusals of `a` and `b` together.
fn merged(a: Span, b: Span) -> Span {
    if a.count == 0 {
        return b;
    }
    Span {
        count: a.count.saturating_add(b.count),
        first: a.first.min(b.first),
        last: a.last.max(b.last),
    }
}

/// Adds the refusals `span` of `ip` at `charged` to the ones waiting for a summary.
fn note_refusals(budget: &mut Budget, ip: IpAddr, charged: Budgeted, span: Span) {
    let waiting = budget.unaudited.get_or_insert_with(|| {
        Box::new(Unaudited {
            ip,
            spans: [Span::default(); 3],
        })
    });
    waiting.ip = ip;
    let into = &mut waiting.spans[charged.index()];
    *into = merged(*into, span);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A millisecond in the limiter's clock.
    const MS: u64 = 1_000;

    impl LoginLimiter {
        /// A start at `/saml/login` by `ip` at `at` µs.
        fn login_at(&self, ip: IpAddr, at: u64) -> Verdict {
            self.check_at(ip, Budgeted::Login, at)
        }
    }

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
            assert_eq!(limiter.login_at(client, 0), Verdict::Allowed);
        }
        assert_eq!(
            limiter.login_at(client, 0),
            Verdict::Refused {
                retry_after: Duration::from_secs(10),
                audit: true
            }
        );
        // Later refusals of the same run are not audited again.
        assert_eq!(
            limiter.login_at(client, 4_000 * MS),
            Verdict::Refused {
                retry_after: Duration::from_secs(6),
                audit: false
            }
        );
        assert_eq!(limiter.login_at(client, 10_000 * MS), Verdict::Allowed);
        assert!(refused(limiter.login_at(client, 10_000 * MS)));
        // A minute of quiet makes the budget whole again.
        for _ in 0..6 {
            assert_eq!(limiter.login_at(client, 80_000 * MS), Verdict::Allowed);
        }
        let Verdict::Refused { audit, .. } = limiter.login_at(client, 80_000 * MS) else {
            panic!("the seventh start of a burst is refused");
        };
        assert!(audit, "a new run's first refusal is audited");
    }

    #[test]
    fn clients_have_budgets_of_their_own() {
        let limiter = LoginLimiter::new(1);
        assert_eq!(limiter.login_at(ip("192.0.2.1"), 0), Verdict::Allowed);
        assert!(refused(limiter.login_at(ip("192.0.2.1"), 0)));
        assert_eq!(limiter.login_at(ip("192.0.2.2"), 0), Verdict::Allowed);
    }

    #[test]
    fn an_ipv6_host_is_its_64_and_mapped_ipv4_is_ipv4() {
        let limiter = LoginLimiter::new(1);
        assert_eq!(limiter.login_at(ip("2001:db8:1:2::1"), 0), Verdict::Allowed);
        assert!(refused(limiter.login_at(ip("2001:db8:1:2:ffff::9"), 0)));
        assert_eq!(limiter.login_at(ip("2001:db8:1:3::1"), 0), Verdict::Allowed);
        assert_eq!(limiter.login_at(ip("198.51.100.7"), 0), Verdict::Allowed);
        assert!(refused(limiter.login_at(ip("::ffff:198.51.100.7"), 0)));
    }

    #[test]
    fn an_ipv6_site_gets_sixteen_budgets_not_one_per_64() {
        let limiter = LoginLimiter::new(1);
        let host = |n: u32| ip(&format!("2001:db8:7:{n:x}::1"));
        for n in 0..SITE_SHARE {
            assert_eq!(
                limiter.login_at(host(n), 0),
                Verdict::Allowed,
                "/64 number {n}"
            );
        }
        // The site's budget is spent: a /64 of it that never started a login is refused, and
        // audited as its own run.
        assert_eq!(
            limiter.login_at(host(SITE_SHARE), 0),
            Verdict::Refused {
                retry_after: Duration::from_micros(60_000_000 / u64::from(SITE_SHARE)),
                audit: true
            }
        );
        // Nothing was charged for the refusal: after one site interval, it goes through.
        let later = 60_000_000 / u64::from(SITE_SHARE);
        assert_eq!(limiter.login_at(host(SITE_SHARE), later), Verdict::Allowed);
        // Another site is not affected.
        assert_eq!(limiter.login_at(ip("2001:db8:8::1"), 0), Verdict::Allowed);
    }

    #[test]
    fn a_full_table_drops_recovered_clients_and_lets_newcomers_through() {
        let limiter = LoginLimiter::new(1);
        for n in 0..MAX_CLIENTS as u32 {
            let client = IpAddr::from(std::net::Ipv4Addr::from(n));
            assert_eq!(limiter.login_at(client, 0), Verdict::Allowed);
        }
        // Full, nobody recovered yet: a newcomer goes through untracked, every time.
        let newcomer = ip("203.0.113.9");
        assert_eq!(limiter.login_at(newcomer, MS), Verdict::Allowed);
        assert_eq!(limiter.login_at(newcomer, 2 * MS), Verdict::Allowed);
        assert_eq!(limiter.untracked_total(), 2);
        // Tracked clients keep their budget.
        assert!(refused(limiter.login_at(ip("0.0.0.5"), 3 * MS)));
        // Once the others have recovered (and a second has passed), room is made.
        assert_eq!(limiter.login_at(newcomer, 60_001 * MS), Verdict::Allowed);
        assert!(refused(limiter.login_at(newcomer, 60_001 * MS)));
        let table = limiter.table.lock().unwrap();
        assert!(table.clients.len() < 10, "{}", table.clients.len());
    }

    #[test]
    fn refusals_and_untracked_starts_are_counted() {
        let limiter = LoginLimiter::new(1);
        let client = ip("192.0.2.1");
        assert_eq!(limiter.login_at(client, 0), Verdict::Allowed);
        for _ in 0..3 {
            assert!(refused(limiter.login_at(client, 0)));
        }
        assert_eq!(limiter.refused_total(), 3);
        assert_eq!(limiter.untracked_total(), 0);
        // A refusal whose record could not be written is asked to be audited again.
        limiter.audit_failed(client, Budgeted::Login);
        let Verdict::Refused { audit, .. } = limiter.login_at(client, 0) else {
            panic!("still over the budget");
        };
        assert!(audit);
    }

    /// (client, endpoint, count, first, last in ms of the limiter's clock) of each summary.
    fn summarized(limiter: &LoginLimiter) -> Vec<(IpAddr, Budgeted, u64, u64, u64)> {
        let taken = limiter.take_unaudited();
        assert!(taken.overflow.is_empty(), "{:?}", taken.overflow);
        let mut rows: Vec<_> = taken
            .each
            .iter()
            .map(|s| {
                (
                    s.ip,
                    s.charged,
                    s.count,
                    s.span.first / MS,
                    s.span.last / MS,
                )
            })
            .collect();
        rows.sort_by_key(|r| (r.0, r.1.index()));
        rows
    }

    #[test]
    fn refusals_after_the_first_of_a_run_are_summarized_per_client_and_endpoint() {
        let limiter = LoginLimiter::new(1);
        let (a, b) = (ip("192.0.2.1"), ip("2001:db8:1:2::1"));
        assert_eq!(limiter.login_at(a, 0), Verdict::Allowed);
        assert_eq!(limiter.login_at(b, 0), Verdict::Allowed);
        // The first refusal is the caller's to audit; the later ones wait for a summary.
        assert!(matches!(
            limiter.login_at(a, MS),
            Verdict::Refused { audit: true, .. }
        ));
        for at in 2..5 {
            assert!(refused(limiter.login_at(a, at * MS)));
        }
        assert!(refused(limiter.check_at(a, Budgeted::Acs, 7 * MS)));
        assert!(refused(limiter.check_at(b, Budgeted::Slo, 9 * MS)));
        assert!(refused(limiter.check_at(
            ip("2001:db8:1:2::9"),
            Budgeted::Slo,
            11 * MS
        )));
        assert_eq!(
            summarized(&limiter),
            [
                (a, Budgeted::Login, 3, 2, 4),
                (a, Budgeted::Acs, 1, 7, 7),
                // One client: the /64, named by its last address.
                (ip("2001:db8:1:2::9"), Budgeted::Slo, 1, 11, 11),
            ]
        );
        // Taken once; a new run of `a` (after a start allowed) is audited first again.
        assert!(summarized(&limiter).is_empty());
        assert_eq!(limiter.login_at(a, 61_000 * MS), Verdict::Allowed);
        assert!(matches!(
            limiter.login_at(a, 61_000 * MS),
            Verdict::Refused { audit: true, .. }
        ));
        assert!(summarized(&limiter).is_empty());
    }

    #[test]
    fn summaries_that_could_not_be_written_are_counted_together() {
        let limiter = LoginLimiter::new(1);
        for n in 0..3 {
            let client = IpAddr::from(std::net::Ipv4Addr::from(n));
            for at in 0..4 {
                limiter.check_at(client, Budgeted::Acs, at * MS);
            }
        }
        let taken = limiter.take_unaudited();
        assert_eq!(taken.each.len(), 3);
        taken.each.iter().for_each(|s| limiter.summary_failed(s));
        let again = limiter.take_unaudited();
        assert!(again.each.is_empty());
        let [overflow] = again.overflow.try_into().unwrap();
        assert_eq!(overflow.charged, Budgeted::Acs);
        assert_eq!((overflow.summaries, overflow.count), (3, 6));
        assert_eq!((overflow.span.first, overflow.span.last), (2 * MS, 3 * MS));
        // Failed again, it waits again; nothing is added per client.
        limiter.overflow_failed(&overflow);
        assert_eq!(limiter.take_unaudited().overflow[0].count, 6);
        assert_eq!(limiter.lock().overflow, [None; 3]);
    }

    #[test]
    fn a_first_refusal_that_could_not_be_audited_waits_for_a_summary() {
        let limiter = LoginLimiter::new(1);
        let a = ip("192.0.2.1");
        limiter.login_at(a, 0);
        assert!(matches!(
            limiter.check_at(a, Budgeted::Slo, 0),
            Verdict::Refused { audit: true, .. }
        ));
        limiter.audit_failed(a, Budgeted::Slo);
        let [(_, charged, count, _, _)] = summarized(&limiter).try_into().unwrap();
        assert_eq!((charged, count), (Budgeted::Slo, 1));
    }

    #[test]
    fn a_client_with_refusals_to_summarize_is_not_swept() {
        let limiter = LoginLimiter::new(1);
        let a = ip("192.0.2.1");
        for _ in 0..3 {
            limiter.login_at(a, 0);
        }
        limiter.lock().sweep(120_000 * MS);
        let [(_, _, count, _, _)] = summarized(&limiter).try_into().unwrap();
        assert_eq!(count, 1);
        limiter.lock().sweep(240_000 * MS);
        assert!(limiter.lock().clients.is_empty());
    }

    #[test]
    fn a_large_budget_keeps_its_rate() {
        // 40,000 a minute: one every 1.5 ms, which whole milliseconds could not express.
        let limiter = LoginLimiter::new(40_000);
        let client = ip("192.0.2.1");
        for _ in 0..40_000 {
            assert_eq!(limiter.login_at(client, 0), Verdict::Allowed);
        }
        assert!(refused(limiter.login_at(client, MS)));
        assert_eq!(limiter.login_at(client, 1_500), Verdict::Allowed);
        assert!(refused(limiter.login_at(client, 2_999)));
        assert_eq!(limiter.login_at(client, 3_000), Verdict::Allowed);
    }
}
