//! What `funion proxy` takes over its OpenAI-compatible HTTP door: any
//! bytes offered as the body of a chat, completion or embedding request
//! are parsed and checked, or refused with an OpenAI-style error, and
//! never panic. The proxy's own request module is compiled in as it is.
#![no_main]

#[allow(dead_code)]
#[path = "../../crates/proxy/src/api.rs"]
mod api;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match api::parse::<api::ChatRequest>(data) {
        Ok(request) => {
            let _ = request.knobs.refuse_unsupported();
            let _ = request.knobs.streams();
            let _ = request.knobs.stream_usage();
        }
        Err(error) => {
            let _ = error.body();
        }
    }
    if let Ok(request) = api::parse::<api::CompletionRequest>(data) {
        let _ = request.knobs.refuse_unsupported();
    }
    if let Ok(request) = api::parse::<api::EmbeddingRequest>(data) {
        let _ = request.inputs();
    }
});
