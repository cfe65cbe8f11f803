//! What an operator or a user hands a funion process as its config: any
//! text offered as a node's, a client's or an authority's config, or as
//! the network's parameters, is parsed and checked, or refused with the
//! reason, and never panics; the authorities a config names make a trust
//! set or a clear error.
#![no_main]

use funion_net::config::{AuthorityFile, ClientFile, NodeFile};
use funion_net::Authorities;
use funion_pki::Parameters;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(node) = toml::from_str::<NodeFile>(text) {
        let _ = node.secret_seed.bytes();
        let _ = Authorities::new(&node.authorities, node.authority_threshold);
    }
    if let Ok(client) = toml::from_str::<ClientFile>(text) {
        let _ = Authorities::new(&client.authorities, client.authority_threshold);
    }
    if let Ok(authority) = toml::from_str::<AuthorityFile>(text) {
        let _ = authority.secret_seed.bytes();
        let _ = authority.parameters.geometry();
    }
    if let Ok(parameters) = toml::from_str::<Parameters>(text) {
        let _ = parameters.geometry();
        let _ = parameters.send_rate();
    }
});
