//! Any bytes given to the cap and index parsers: no panic, and whatever
//! parses serializes back to the same bytes and can be used.
#![no_main]

use funion_bacap::{MessageBoxIndex, ReadCap, WriteCap};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(index) = MessageBoxIndex::from_bytes(data) {
        assert_eq!(&index.to_bytes()[..], data);
        let _ = index.next();
        let _ = index.mutate_kdf_state(b"fuzz");
    }
    if let Ok(cap) = ReadCap::from_bytes(data) {
        assert_eq!(&cap.to_bytes()[..], data);
        let _ = cap.box_id(cap.index(), b"fuzz");
        if let Ok(next) = cap.index().next() {
            assert!(cap.contains(&next).is_ok());
        }
    }
    if let Ok(cap) = WriteCap::from_bytes(data) {
        assert_eq!(&cap.to_bytes()[..], data);
        let read = cap.read_cap();
        assert_eq!(
            cap.box_id(cap.index(), b"c"),
            read.box_id(read.index(), b"c")
        );
    }
});
