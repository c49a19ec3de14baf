//! The agent's own lookups of the catalog's exact names, so a connect() to
//! a registry address is recognised even when the query that found it was
//! not seen (made before the agent started, or over an unobserved path).

use std::{net::IpAddr, time::Duration};

use tokio::{sync::mpsc, task::JoinSet};

use crate::clock;

/// A lookup gives up after this long; the next round tries again.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// The addresses one catalog name resolved to, and when (CLOCK_BOOTTIME).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub name: String,
    pub addresses: Vec<IpAddr>,
    pub boot_ns: u64,
}

/// Resolves every name each `every`, sending what resolved; ends when the
/// queue is closed.
pub async fn resolve_catalog<T: From<Resolved>>(
    names: Vec<String>,
    every: Duration,
    queue: mpsc::Sender<T>,
) {
    loop {
        let mut lookups = JoinSet::new();
        for name in names.iter().cloned() {
            lookups.spawn(async move {
                let lookup = tokio::net::lookup_host((name.clone(), 443));
                let addresses: Vec<IpAddr> =
                    match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
                        Ok(Ok(addrs)) => addrs.map(|a| a.ip()).collect(),
                        _ => Vec::new(),
                    };
                (name, addresses)
            });
        }
        while let Some(Ok((name, addresses))) = lookups.join_next().await {
            if addresses.is_empty() {
                continue;
            }
            let resolved = Resolved {
                name,
                addresses,
                boot_ns: clock::boot_ns(),
            };
            if queue.send(T::from(resolved)).await.is_err() {
                return;
            }
        }
        tokio::time::sleep(every).await;
    }
}
