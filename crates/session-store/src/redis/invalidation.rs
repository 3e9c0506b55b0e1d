//! The session cache's invalidation: every end of a session is announced on a pub/sub channel
//! of the deployment, and a task per store drops the announced sessions from its cache.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use super::connect::{CONNECT_TIMEOUT, RESPONSE_TIMEOUT};
use super::RedisStore;
use crate::cache::SessionCache;

impl RedisStore {
    /// The invalidation channel of this store's deployment.
    pub(super) fn channel(&self) -> String {
        invalidation_channel(&self.namespace)
    }

    /// Drops the cached records of the sessions a script answered with (`hash, record, ...`).
    pub(super) fn forget_pairs(&self, flat: &[Vec<u8>]) {
        for pair in flat.chunks_exact(2) {
            self.cache.remove(&String::from_utf8_lossy(&pair[0]));
        }
    }
}

/// The pub/sub channel on which every end of a session of this deployment is announced.
pub(super) fn invalidation_channel(namespace: &str) -> String {
    format!("{namespace}:invalidate")
}

/// Keeps `cache` in step with the invalidation channel for as long as the store lives: while
/// subscribed, each announced session hash is dropped; while not, the cache is off and empty.
/// The announcements are published with `pcall`, so a Redis that refuses them still ends the
/// sessions (the cache then relies on its TTL).
pub(super) fn follow_invalidations(
    client: Arc<ArcSwap<redis::Client>>,
    channel: String,
    cache: Arc<SessionCache>,
) {
    use futures_util::StreamExt;
    let weak = Arc::downgrade(&cache);
    drop(cache);
    tokio::spawn(async move {
        let mut warned = false;
        loop {
            // Every store is gone: stop.
            if weak.strong_count() == 0 {
                return;
            }
            // The client in force: renewed access applies from the next connection.
            let current = client.load_full();
            let mut renewed = false;
            let connected = tokio::time::timeout(CONNECT_TIMEOUT, current.get_async_pubsub()).await;
            if let Ok(Ok(mut pubsub)) = connected {
                if pubsub.subscribe(&channel).await.is_ok() {
                    match weak.upgrade() {
                        Some(cache) => cache.set_enabled(true),
                        None => return,
                    }
                    // A connection put in force meanwhile (a failover): off again, and subscribe
                    // there, or sign-outs announced on it would be missed with the cache on.
                    // (The swap turns the cache off after it, too.)
                    if !Arc::ptr_eq(&current, &client.load()) {
                        if let Some(cache) = weak.upgrade() {
                            cache.set_enabled(false);
                        }
                        continue;
                    }
                    if warned {
                        tracing::info!("session cache: the invalidation subscription is back");
                        warned = false;
                    }
                    let (mut sink, mut messages) = pubsub.split();
                    let mut check = tokio::time::interval(Duration::from_secs(5));
                    loop {
                        tokio::select! {
                            message = messages.next() => {
                                let Some(message) = message else { break };
                                let Some(cache) = weak.upgrade() else { return };
                                if let Ok(hash) = message.get_payload::<String>() {
                                    cache.remove(&hash);
                                }
                            }
                            _ = check.tick() => {
                                if weak.strong_count() == 0 {
                                    return;
                                }
                                // Renewed access: subscribe again with it, so that the old
                                // certificate or password (rotated out, perhaps) is not used
                                // for as long as this connection lasts.
                                if !Arc::ptr_eq(&current, &client.load()) {
                                    renewed = true;
                                    break;
                                }
                                // A connection that hangs without closing would lose
                                // announcements unseen: it must answer a ping.
                                let pong = tokio::time::timeout(
                                    RESPONSE_TIMEOUT,
                                    sink.ping::<redis::Value>(),
                                )
                                .await;
                                if !matches!(pong, Ok(Ok(_))) {
                                    break;
                                }
                            }
                        }
                    }
                }
            }
            if let Some(cache) = weak.upgrade() {
                let was_on = cache.is_enabled();
                // Announcements may be missed until the next subscription: no cache meanwhile.
                cache.set_enabled(false);
                if renewed {
                    tracing::info!(
                        "session cache: subscribing again on the connection now in force"
                    );
                    continue;
                }
                if was_on || !warned {
                    tracing::warn!(
                        "session cache: no invalidation subscription to Redis; every request \
                         reads Redis until it is back"
                    );
                    warned = true;
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
}
