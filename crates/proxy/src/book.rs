//! The ticket book kept topped up in the background: tickets are proved
//! ahead of time, off the request path, on one thread, and never beyond
//! the deposit's limit per credit period (the wallet refuses to reserve
//! message ids past it).

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use funion_client::jobs::{pay, JobSpec};
use funion_client::wallet::{drop_stale_tickets, top_up, Wallet};
use funion_pki::Credits;
use tokio::sync::Notify;

use crate::api::ApiError;
use axum::http::StatusCode;

/// The book and the task that keeps it filled.
pub struct Book {
    wallet: Arc<Wallet>,
    credits: Credits,
    /// Wakes the top-up task (a payment found the book short).
    wanted: Arc<Notify>,
    /// Told after each proved batch.
    proved: Arc<Notify>,
}

/// How the book is kept.
#[derive(Clone, Copy, Debug)]
pub struct BookPolicy {
    /// Prove more when fewer usable tickets than this are left.
    pub low_water: usize,
    /// Tickets proved per round.
    pub batch: u32,
    /// How long a request waits for tickets before it is refused.
    pub wait: Duration,
}

impl Default for BookPolicy {
    fn default() -> Self {
        BookPolicy {
            low_water: 8,
            batch: 4,
            wait: Duration::from_secs(120),
        }
    }
}

impl Book {
    /// Starts keeping `wallet`'s book for `credits`' provider.
    pub fn start(wallet: Arc<Wallet>, credits: Credits, policy: BookPolicy) -> Arc<Self> {
        let book = Arc::new(Book {
            wallet,
            credits,
            wanted: Arc::new(Notify::new()),
            proved: Arc::new(Notify::new()),
        });
        let keeper = book.clone();
        tokio::spawn(async move { keeper.keep(policy).await });
        book
    }

    /// Usable tickets in the book now (this credit period and the last).
    pub fn usable(&self) -> usize {
        let period = self.credits.period_at(funion_net::unix_ms() / 1000);
        self.wallet
            .book()
            .map(|rows| {
                rows.into_iter()
                    .filter(|(provider, p, _)| {
                        *provider == self.credits.provider && *p + 1 >= period
                    })
                    .map(|(_, _, count)| count)
                    .sum()
            })
            .unwrap_or(0)
    }

    async fn keep(&self, policy: BookPolicy) {
        let mut last_period = None;
        loop {
            let period = self.credits.period_at(funion_net::unix_ms() / 1000);
            if last_period != Some(period) {
                if let Err(error) = drop_stale_tickets(&self.wallet, &self.credits).await {
                    tracing::warn!(%error, "could not check the book against the ledger");
                }
                last_period = Some(period);
            }
            if self.usable() < policy.low_water {
                let result = top_up(
                    self.wallet.clone(),
                    &self.credits,
                    policy.batch,
                    1,
                    Arc::new(AtomicU64::new(0)),
                )
                .await;
                match result {
                    Ok(count) => {
                        tracing::info!(count, "proved tickets into the book");
                        self.proved.notify_waiters();
                        continue;
                    }
                    Err(error) => {
                        // Most often: this period's limit is used up; the
                        // next period brings fresh message ids.
                        tracing::warn!(error = %format!("{error:#}"), "could not prove tickets");
                    }
                }
            }
            tokio::select! {
                _ = self.wanted.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
        }
    }

    /// Pays for `spec` from the book, waiting up to `wait` for the
    /// top-up when the book is short.
    pub async fn pay(&self, spec: &mut JobSpec, wait: Duration) -> Result<(), ApiError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let proved = self.proved.notified();
            match pay(spec, &self.credits, &self.wallet) {
                Ok(()) => return Ok(()),
                Err(error) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(error = %format!("{error:#}"), "waiting for tickets");
                    self.wanted.notify_one();
                    tokio::select! {
                        _ = proved => {}
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
                Err(error) => {
                    return Err(ApiError::server(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "insufficient_tickets",
                        format!("no tickets to pay with: {error:#}"),
                    ))
                }
            }
        }
    }
}
