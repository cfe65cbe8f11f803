//! The client: a mixnet session with a gateway on the wall clock
//! ([`session`]: connect, ping), Pigeonhole storage through couriers
//! ([`storage`]: put, get, delete), inference jobs over that session
//! ([`jobs`]) and the wallet that pays for them ([`wallet`]).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod jobs;
pub mod session;
pub mod storage;
pub mod wallet;
