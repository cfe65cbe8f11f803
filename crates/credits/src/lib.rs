//! Credit rules as plain functions and small traits, sans-I/O: what the
//! compute courier's ticket gate decides ([`gate`]), the nullifier set it
//! records spends in ([`nullifiers`]), and the wallet's rules for reserving,
//! spending and dropping tickets ([`wallet`]), and the ledger's rules for
//! deposits, slashing, burns, withdrawals and live roots ([`ledger`]). Databases, HTTP and the ledger's
//! process stay in the runtime, which carries out what these rules say.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod gate;
pub mod ledger;
pub mod nullifiers;
pub mod wallet;
