//! The failover watch behind Sentinel: while a store lives, it asks the sentinels every
//! [`WATCH_INTERVAL`] where the master is and, after a failover, connects to the new master and
//! puts that connection in force for every clone of the store, as a renewal does.

use std::sync::{Arc, Weak};

use arc_swap::ArcSwap;
use redis::aio::ConnectionManager;

use crate::cache::SessionCache;
use crate::redis::{Counters, RedisAccess};
use crate::sentinel::{address, open_master, shown_addr, SentinelUrl, WATCH_INTERVAL};

/// What the failover watch replaces in a store, shared with every clone of it.
pub(crate) struct Watched {
    /// The connection in force; the watch stops when the store is gone.
    pub(crate) connection: Weak<ArcSwap<ConnectionManager>>,
    /// The client the connection and the invalidation subscription were made with.
    pub(crate) client: Arc<ArcSwap<redis::Client>>,
    /// The password and TLS settings in force.
    pub(crate) access: Arc<ArcSwap<RedisAccess>>,
    /// Held while a connection is put in force, by a renewal or by the watch.
    pub(crate) replacing: Arc<tokio::sync::Mutex<()>>,
    /// The session cache, off from a failover until the subscription moves to the new master.
    pub(crate) cache: Weak<SessionCache>,
    /// The store's counters: each move to a new master counts.
    pub(crate) counters: Arc<Counters>,
}

/// Asks the sentinels every [`WATCH_INTERVAL`] where the master is and, when they name another
/// one (a failover), connects there and puts that connection in force for every clone of the
/// store. The connection is made without holding `replacing`, and put in force only when no
/// renewal replaced the one compared meanwhile. Stops when every clone of the store is gone.
pub(crate) fn follow_master(watched: Watched, sentinel: SentinelUrl) {
    tokio::spawn(async move {
        let mut last_problem = None;
        loop {
            tokio::time::sleep(WATCH_INTERVAL).await;
            if watched.connection.strong_count() == 0 {
                return;
            }
            let access = watched.access.load_full();
            let problem = match sentinel.master(&access).await {
                Err(e) => Some(format!("{e}; the connection in force stays")),
                Ok(named) => {
                    let in_force = watched.client.load_full();
                    let from = shown_addr(&in_force.get_connection_info().addr);
                    if from == address(&named.0, named.1) {
                        None
                    } else {
                        let to = address(&named.0, named.1);
                        match open_master(&sentinel, named, &access).await {
                            Err(e) => Some(format!("{e}; the connection in force stays")),
                            Ok((client, connection)) => {
                                let _one_at_a_time = watched.replacing.lock().await;
                                let Some(slot) = watched.connection.upgrade() else {
                                    return;
                                };
                                // A renewal came first: look again at the next turn.
                                let unchanged = Arc::ptr_eq(&in_force, &watched.client.load())
                                    && Arc::ptr_eq(&access, &watched.access.load());
                                if unchanged {
                                    // Sign-outs are announced on the new master: nothing is
                                    // served from the cache until the subscription is there.
                                    if let Some(cache) = watched.cache.upgrade() {
                                        cache.set_enabled(false);
                                    }
                                    slot.store(Arc::new(connection));
                                    watched.client.store(Arc::new(client));
                                    // Again after: a subscription made on the old one may have
                                    // turned it on in between.
                                    if let Some(cache) = watched.cache.upgrade() {
                                        cache.set_enabled(false);
                                    }
                                    watched
                                        .counters
                                        .master_changes
                                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                    tracing::warn!(
                                        from = %from,
                                        to = %to,
                                        "Redis Sentinel: the master moved; connected to the new \
                                         master"
                                    );
                                }
                                None
                            }
                        }
                    }
                }
            };
            // Each problem is logged once, not every second.
            if problem != last_problem {
                match &problem {
                    Some(p) => tracing::warn!(problem = %p, "Redis Sentinel"),
                    None => tracing::info!("Redis Sentinel: the sentinels and the master answer"),
                }
                last_problem = problem;
            }
        }
    });
}
