//! What a compute courier and a client take from the mixnet: any bytes
//! offered as a dispatch, a dispatch reply, a padded input or a padded
//! output are parsed and checked, or refused, and never panic.
#![no_main]

use funion_compute::{Dispatch, DispatchReply, Input, Outcome, INPUT_CLASSES, OUTPUT_CLASSES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(dispatch) = Dispatch::decode(data) {
        // What decoded encodes and decodes the same way again.
        let again = Dispatch::decode(&dispatch.encode()).expect("a decoded dispatch re-decodes");
        assert_eq!(again.encode(), dispatch.encode());
    }
    let _ = DispatchReply::decode(data);
    // The class is the first byte's pick among the public ones (and a
    // class that is none, to see it refused).
    let pick = data.first().copied().unwrap_or(0) as usize;
    let input_class = INPUT_CLASSES
        .get(pick % (INPUT_CLASSES.len() + 1))
        .copied()
        .unwrap_or(3);
    let output_class = OUTPUT_CLASSES
        .get(pick % (OUTPUT_CLASSES.len() + 1))
        .copied()
        .unwrap_or(3);
    let body = data.get(1..).unwrap_or_default();
    let _ = Input::decode(body, input_class);
    let _ = Outcome::decode(body, output_class);
});
