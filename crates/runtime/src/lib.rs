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
pub mod credits;
pub mod devnet;
pub mod jobs;
pub mod node;
mod replica;
pub mod storage;
pub mod store;
pub mod wallet;

pub use funion_ledger as ledger;
pub use funion_net::{
    config, directory, fetch_document, fetch_parameters, link, metrics, peers, unix_ms, unix_us,
};
