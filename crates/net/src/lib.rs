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

use funion_pki::{NetworkDocument, Parameters, Trust};

/// How long one HTTP call between funion processes may take, connecting,
/// sending and reading the answer together.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// The most bytes read from the answer to such a call (a document with
/// thousands of nodes is far smaller).
pub const MAX_HTTP_BODY: usize = 16 << 20;

/// The HTTP client for calls between funion processes: connecting times
/// out after 5 s and a whole call after `timeout`, so a peer that accepts
/// and never answers cannot hold a task for ever.
pub fn http_client_with(timeout: Duration) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .timeout(timeout)
        .build()?)
}

/// [`http_client_with`] at [`HTTP_TIMEOUT`].
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    http_client_with(HTTP_TIMEOUT)
}

/// Reads an answer's body, refusing one longer than `max` bytes without
/// reading the rest.
pub async fn read_body(mut response: reqwest::Response, max: usize) -> anyhow::Result<Vec<u8>> {
    if response.content_length().is_some_and(|n| n > max as u64) {
        anyhow::bail!("answer too large: over {max} bytes");
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > max {
            anyhow::bail!("answer too large: over {max} bytes");
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

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

/// The directory authorities a node or client trusts: where they are,
/// and how many must endorse a document.
#[derive(Clone, Debug)]
pub struct Authorities {
    urls: Vec<String>,
    trust: Trust,
}

impl Authorities {
    /// From a config's list and threshold (a majority when `None`).
    pub fn new(list: &[config::AuthorityRef], threshold: Option<usize>) -> anyhow::Result<Self> {
        let mut keys = Vec::with_capacity(list.len());
        for (i, authority) in list.iter().enumerate() {
            keys.push(config::hex32(&authority.key).map_err(|e| {
                anyhow::anyhow!("authorities[{i}].key is not an Ed25519 public key: {e}")
            })?);
        }
        let trust = Trust::new(keys, threshold)
            .map_err(|e| anyhow::anyhow!("the authorities in the config: {e}"))?;
        Ok(Authorities {
            urls: list
                .iter()
                .map(|a| a.url.trim_end_matches('/').to_string())
                .collect(),
            trust,
        })
    }

    /// Their base URLs.
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// Their keys and threshold.
    pub fn trust(&self) -> &Trust {
        &self.trust
    }
}

/// An HTTP error in words, saying plainly when it was a timeout.
fn describe(error: &reqwest::Error) -> String {
    let mut text = if error.is_timeout() {
        format!("timed out: {error}")
    } else {
        error.to_string()
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// Fetches the network's parameters from the first authority that
/// answers, retrying briefly while they start.
pub async fn fetch_parameters(
    http: &reqwest::Client,
    authorities: &Authorities,
) -> anyhow::Result<Parameters> {
    let mut last = None;
    for attempt in 0..50u32 {
        for url in authorities.urls() {
            match http.get(format!("{url}/parameters")).send().await {
                Ok(response) if response.status().is_success() => {
                    let body = read_body(response, MAX_HTTP_BODY).await?;
                    let text = String::from_utf8(body)
                        .map_err(|_| anyhow::anyhow!("{url}: the parameters are not UTF-8"))?;
                    return toml::from_str(&text)
                        .map_err(|e| anyhow::anyhow!("bad parameters from {url}: {e}"));
                }
                Ok(response) => {
                    last = Some(anyhow::anyhow!("{url} answered {}", response.status()))
                }
                Err(e) => last = Some(anyhow::anyhow!("{url}: {}", describe(&e))),
            }
        }
        tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt + 1).min(10))).await;
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no answer from any authority")))
}

/// Waits (up to [`DOCUMENT_WAIT`]) for the document of `epoch`, or, once a
/// later epoch has begun, for the current one: an epoch whose document no
/// authority sealed (every node came too late for it) is not waited on
/// past its end.
pub async fn wait_for_document(
    http: &reqwest::Client,
    authorities: &Authorities,
    epoch: u64,
    epoch_ms: u64,
) -> anyhow::Result<NetworkDocument> {
    let started = tokio::time::Instant::now();
    loop {
        let target = epoch.max(funion_pki::epoch_at(unix_ms(), epoch_ms));
        match fetch_document(http, authorities, target, false).await {
            Ok(document) => return Ok(document),
            Err(e) if started.elapsed() >= DOCUMENT_WAIT => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// How long [`fetch_document`] with `wait` keeps asking: longer than an
/// authority's boot grace in a devnet (90 s) and its vote window.
pub const DOCUMENT_WAIT: Duration = Duration::from_secs(180);

/// Fetches the document for `epoch` from the authorities in turn and
/// returns the first that a threshold of them endorsed. With `wait`,
/// retries (for up to [`DOCUMENT_WAIT`]) while none has one.
pub async fn fetch_document(
    http: &reqwest::Client,
    authorities: &Authorities,
    epoch: u64,
    wait: bool,
) -> anyhow::Result<NetworkDocument> {
    let mut reasons = Vec::new();
    let n = authorities.urls().len();
    let started = tokio::time::Instant::now();
    for round in 0.. {
        reasons.clear();
        for k in 0..n {
            let url = &authorities.urls()[(round + k) % n];
            match http.get(format!("{url}/document/{epoch}")).send().await {
                Ok(response) if response.status().is_success() => {
                    match read_body(response, MAX_HTTP_BODY).await.and_then(|bytes| {
                        Ok(NetworkDocument::verify(&bytes, authorities.trust(), epoch)?)
                    }) {
                        Ok(document) => return Ok(document),
                        Err(e) => reasons.push(format!("{url}: {e}")),
                    }
                }
                Ok(response) => {
                    let said = read_body(response, 4_096).await.unwrap_or_default();
                    reasons.push(format!("{url}: {}", String::from_utf8_lossy(&said)));
                }
                Err(e) => reasons.push(format!("{url}: {}", describe(&e))),
            }
        }
        if !wait || started.elapsed() >= DOCUMENT_WAIT {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(anyhow::anyhow!(
        "no authority served a document for epoch {epoch}: {}",
        reasons.join("; ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn authorities(url: &str) -> Authorities {
        let key = ed25519_dalek::SigningKey::from_bytes(&[1; 32]).verifying_key();
        Authorities::new(
            &[config::AuthorityRef {
                url: url.into(),
                key: hex::encode(key.to_bytes()),
            }],
            None,
        )
        .unwrap()
    }

    /// A peer that accepts and never answers: the call fails with a
    /// timeout instead of waiting for ever.
    #[tokio::test]
    async fn a_call_to_a_peer_that_never_answers_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        let http = http_client_with(Duration::from_millis(300)).unwrap();
        let error = fetch_document(&http, &authorities(&url), 0, false)
            .await
            .unwrap_err();
        assert!(error.to_string().contains("timed out"), "{error:#}");
        silent.abort();
    }

    /// An answer longer than the limit is refused, not read into memory.
    #[tokio::test]
    async fn an_answer_over_the_limit_is_refused() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let flood = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            // Read the request first, then answer.
            let mut request = Vec::new();
            let mut byte = [0u8; 1];
            while !request.ends_with(b"\r\n\r\n") {
                if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                    return;
                }
                request.push(byte[0]);
            }
            let head = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
            stream.write_all(head.as_bytes()).await.unwrap();
            let chunk = format!("{:x}\r\n{}\r\n", 1 << 16, "x".repeat(1 << 16));
            // Without a length up front: more than the limit, chunk by chunk.
            for _ in 0..(MAX_HTTP_BODY >> 16) + 2 {
                if stream.write_all(chunk.as_bytes()).await.is_err() {
                    return;
                }
            }
        });
        let http = http_client().unwrap();
        let error = fetch_document(&http, &authorities(&url), 0, false)
            .await
            .unwrap_err();
        assert!(error.to_string().contains("too large"), "{error:#}");
        flood.abort();
    }
}
