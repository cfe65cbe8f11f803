//! What every funion process shares on the network: configuration files
//! and keys ([`config`]), Noise links ([`link`]), links between nodes
//! ([`peers`]), the directory client ([`directory`], [`fetch_parameters`],
//! [`fetch_document`]), metrics ([`metrics`]) and the wall clock.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod config;
pub mod directory;
pub mod link;
pub mod metrics;
pub mod peers;

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
