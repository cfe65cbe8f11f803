//! Credit rules as plain functions and small traits, sans-I/O: what the
//! compute courier's ticket gate decides ([`gate`]) and the nullifier set it
//! records spends in ([`nullifiers`]). Databases, HTTP and the ledger's
//! process stay in the runtime, which carries out what these rules say.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod gate;
pub mod nullifiers;
