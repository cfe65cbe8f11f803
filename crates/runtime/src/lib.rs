//! The tokio runtime: drives the sans-I/O state machines over real sockets
//! and the wall clock. Noise links ([`link`]), the authority
//! ([`authority`]), gateway/mix/service nodes ([`node`]) with the
//! Pigeonhole courier on service nodes, storage replicas over redb
//! ([`store`]), the client ([`client`], [`storage`]), metrics, and
//! `devnet`, a whole network on loopback.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod authority;
pub mod calibrate;
pub mod client;
pub mod compute;
pub mod config;
pub mod credits;
pub mod devnet;
pub mod jobs;
pub mod ledger;
pub mod link;
pub mod metrics;
pub mod node;
mod replica;
pub mod storage;
pub mod store;
pub mod wallet;

use std::time::Duration;

use funion_pki::{NetworkDocument, Parameters};

/// Milliseconds since the Unix epoch, on the wall clock.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Microseconds since the Unix epoch, on the wall clock.
pub fn unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Fetches the network's parameters from the authority, retrying briefly
/// while it starts.
pub async fn fetch_parameters(http: &reqwest::Client, url: &str) -> anyhow::Result<Parameters> {
    let mut last = None;
    for attempt in 0..50u32 {
        match http.get(format!("{url}/parameters")).send().await {
            Ok(response) if response.status().is_success() => {
                let text = response.text().await?;
                return toml::from_str(&text)
                    .map_err(|e| anyhow::anyhow!("bad parameters from the authority: {e}"));
            }
            Ok(response) => {
                last = Some(anyhow::anyhow!("authority answered {}", response.status()))
            }
            Err(e) => last = Some(e.into()),
        }
        tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt + 1).min(10))).await;
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no answer from the authority")))
}

/// Fetches and verifies the document for `epoch`. With `wait`, retries
/// (for up to a minute) while the authority says it is not complete yet.
pub async fn fetch_document(
    http: &reqwest::Client,
    url: &str,
    authority_key: &[u8; 32],
    epoch: u64,
    wait: bool,
) -> anyhow::Result<NetworkDocument> {
    let mut last = anyhow::anyhow!("no answer from the authority");
    for _ in 0..if wait { 600 } else { 1 } {
        match http.get(format!("{url}/document/{epoch}")).send().await {
            Ok(response) if response.status().is_success() => {
                let bytes = response.bytes().await?;
                return Ok(NetworkDocument::verify(&bytes, authority_key, epoch)?);
            }
            Ok(response) => {
                last = anyhow::anyhow!(
                    "authority: {}",
                    String::from_utf8_lossy(&response.bytes().await.unwrap_or_default())
                )
            }
            Err(e) => last = e.into(),
        }
        if wait {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Err(last)
}
