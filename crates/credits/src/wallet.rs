//! The wallet's rules. A message id is reserved durably before its ticket
//! is made, so no crash makes one id twice. A ticket leaves the book
//! durably before it is handed over, so none is spent twice. Both would
//! give the deposit's secret away. A ticket no courier takes any more is
//! stale: it leaves the book, and its id stays used. The runtime's redb
//! wallet and the simulator's wallets carry out these rules.

use std::ops::Range;

use funion_tickets::{Scalar, Ticket};

/// Why a wallet cannot pay.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WalletError {
    /// Fewer message ids are left in the period than the tickets asked for.
    #[error("only {left} of this period's {limit} tickets are left")]
    Exhausted {
        /// Ids still unused in the period.
        left: u32,
        /// The deposit's limit per period.
        limit: u32,
    },
}

/// The ids to reserve for `count` tickets, given the period's next unused
/// id and the deposit's limit. The caller stores `range.end` as the next
/// unused id before it makes any ticket with them.
pub fn reserve(next: u32, count: u32, limit: u32) -> Result<Range<u32>, WalletError> {
    let end = next.saturating_add(count);
    if end > limit {
        return Err(WalletError::Exhausted {
            left: limit - next.min(limit),
            limit,
        });
    }
    Ok(next..end)
}

/// The periods a ticket may be spent in at `now_s`: the ones couriers take
/// ([`crate::gate::accepted_periods`]).
pub fn spendable_periods(credits: &funion_pki::Credits, now_s: u64) -> [u64; 2] {
    crate::gate::accepted_periods(credits, now_s)
}

/// Whether a ticket in the book for `entry_provider` and `entry_period`
/// may pay a job at `provider` now.
pub fn spendable(entry_provider: &str, entry_period: u64, provider: &str, periods: &[u64]) -> bool {
    entry_provider == provider && periods.contains(&entry_period)
}

/// Whether a ticket in the book for `provider` is stale: proved for a period
/// before `oldest_period`, against a root not in `live_roots` (the
/// ledger's recent roots), or unreadable. Tickets for other providers are
/// not judged here.
pub fn stale(
    entry_provider: &str,
    entry_period: u64,
    ticket: &[u8],
    provider: &str,
    oldest_period: u64,
    live_roots: &[Scalar],
) -> bool {
    entry_provider == provider
        && !(entry_period >= oldest_period
            && Ticket::decode(ticket).is_ok_and(|t| live_roots.contains(&t.root)))
}
