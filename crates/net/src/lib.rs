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

/// Fetches the network's parameters from the authority, retrying briefly
/// while it starts.
pub async fn fetch_parameters(http: &reqwest::Client, url: &str) -> anyhow::Result<Parameters> {
    let mut last = None;
    for attempt in 0..50u32 {
        match http.get(format!("{url}/parameters")).send().await {
            Ok(response) if response.status().is_success() => {
                let body = read_body(response, MAX_HTTP_BODY).await?;
                let text = String::from_utf8(body)
                    .map_err(|_| anyhow::anyhow!("the authority's parameters are not UTF-8"))?;
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
                let bytes = read_body(response, MAX_HTTP_BODY).await?;
                return Ok(NetworkDocument::verify(&bytes, authority_key, epoch)?);
            }
            Ok(response) => {
                let said = read_body(response, 4_096).await.unwrap_or_default();
                last = anyhow::anyhow!("authority: {}", String::from_utf8_lossy(&said))
            }
            Err(e) => last = e.into(),
        }
        if wait {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

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
        let error = fetch_document(&http, &url, &[0; 32], 0, false)
            .await
            .unwrap_err();
        let timed_out = error
            .downcast_ref::<reqwest::Error>()
            .is_some_and(|e| e.is_timeout());
        assert!(timed_out, "{error:#}");
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
        let error = fetch_document(&http, &url, &[0; 32], 0, false)
            .await
            .unwrap_err();
        assert!(error.to_string().contains("too large"), "{error:#}");
        flood.abort();
    }
}
