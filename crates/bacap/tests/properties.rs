//! Property tests: round trips through the stateful writer and reader, every
//! flipped bit rejected, parsers total on arbitrary bytes. Seeded, so every
//! run tries the same cases.

use funion_bacap::{
    BoxContent, BoxId, BoxSignature, Error, MessageBoxIndex, ReadCap, Reader, WriteCap, Writer,
    MESSAGE_BOX_INDEX_SIZE, READ_CAP_SIZE, WRITE_CAP_SIZE,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

fn config(cases: u32) -> Config {
    Config {
        cases,
        rng_seed: RngSeed::Fixed(0xb0ca9),
        failure_persistence: None,
        ..Config::default()
    }
}

fn cap(seed: u64) -> WriteCap {
    WriteCap::generate(&mut ChaCha20Rng::seed_from_u64(seed))
}

proptest! {
    #![proptest_config(config(48))]

    #[test]
    fn writer_and_reader_round_trip(
        seed in any::<u64>(),
        ctx in proptest::collection::vec(any::<u8>(), 0..40),
        messages in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..4),
    ) {
        let cap = cap(seed);
        let mut writer = Writer::new(cap.clone(), &ctx);
        let mut reader = Reader::new(cap.read_cap(), &ctx);
        for message in &messages {
            prop_assert_eq!(writer.next_box_id(), reader.next_box_id());
            let sealed = writer.seal_next(message).unwrap();
            prop_assert_eq!(sealed.ciphertext.len(), message.len() + 16);
            let opened = reader.open_next(&sealed.id, &sealed.ciphertext, &sealed.signature).unwrap();
            prop_assert_eq!(opened, BoxContent::Message(message.clone()));
        }
        prop_assert_eq!(writer.next_index(), reader.next_index());
    }

    #[test]
    fn any_flipped_bit_is_rejected(seed in any::<u64>(), bit in 0usize..(8 * (32 + 64 + 48))) {
        let cap = cap(seed);
        let writer = Writer::new(cap.clone(), b"ctx");
        let sealed = writer.prepare(b"thirty-two bytes of plaintext!!!");
        let (mut id, mut ciphertext, mut signature) = (sealed.id.0, sealed.ciphertext.clone(), sealed.signature.0);
        let byte = bit / 8;
        let mask = 1u8 << (bit % 8);
        let expected = if byte < 32 {
            id[byte] ^= mask;
            Error::BoxMismatch
        } else if byte < 32 + 64 {
            signature[byte - 32] ^= mask;
            Error::SignatureInvalid
        } else {
            ciphertext[byte - 96] ^= mask;
            Error::SignatureInvalid
        };
        let mut reader = Reader::new(cap.read_cap(), b"ctx");
        let before = reader.next_index().clone();
        let got = reader.open_next(&BoxId(id), &ciphertext, &BoxSignature(signature));
        prop_assert_eq!(got, Err(expected));
        prop_assert_eq!(reader.next_index(), &before, "a rejected box must not move the reader");
    }

    #[test]
    fn wire_forms_round_trip(seed in any::<u64>(), steps in 0u64..50) {
        let cap = cap(seed);
        let moved = cap.with_index(cap.index().advance_to(cap.index().idx64() + steps).unwrap());
        let write = moved.to_bytes();
        prop_assert_eq!(WriteCap::from_bytes(write.as_ref()).unwrap().to_bytes(), write.clone());
        let read = moved.read_cap().to_bytes();
        prop_assert_eq!(ReadCap::from_bytes(read.as_ref()).unwrap().to_bytes(), read);
        let index = moved.index().to_bytes();
        prop_assert_eq!(MessageBoxIndex::from_bytes(index.as_ref()).unwrap().to_bytes(), index);
        prop_assert!(cap.contains(moved.index()).is_ok());
    }

    #[test]
    fn parsers_are_total(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let index = MessageBoxIndex::from_bytes(&bytes);
        prop_assert_eq!(index.is_ok(), bytes.len() == MESSAGE_BOX_INDEX_SIZE);
        if let Ok(read) = ReadCap::from_bytes(&bytes) {
            prop_assert_eq!(bytes.len(), READ_CAP_SIZE);
            prop_assert_eq!(&read.to_bytes()[..], &bytes[..]);
        }
        if let Ok(write) = WriteCap::from_bytes(&bytes) {
            prop_assert_eq!(bytes.len(), WRITE_CAP_SIZE);
            prop_assert_eq!(&write.to_bytes()[..], &bytes[..]);
        }
    }

    #[test]
    fn a_write_cap_with_a_foreign_public_key_is_rejected(a in any::<u64>(), b in any::<u64>()) {
        prop_assume!(a != b);
        let mut bytes = cap(a).to_bytes();
        bytes[32..64].copy_from_slice(&cap(b).root_public_key());
        let rejected = matches!(WriteCap::from_bytes(bytes.as_ref()), Err(Error::Malformed { .. }));
        prop_assert!(rejected);
    }
}

#[test]
fn generation_draws_seed_then_ratchet_then_start() {
    use rand_chacha::rand_core::RngCore;
    let mut stream = [0u8; 80];
    ChaCha20Rng::seed_from_u64(7).fill_bytes(&mut stream);
    let cap = cap(7);
    assert_eq!(
        &cap.to_bytes()[..32],
        &stream[..32],
        "the Ed25519 seed comes first"
    );
    let mut start = [0u8; 16];
    start.copy_from_slice(&stream[64..80]);
    start[7] &= 0x3f;
    start[15] &= 0x3f;
    let low = u64::from_le_bytes(start[..8].try_into().unwrap());
    let high = u64::from_le_bytes(start[8..].try_into().unwrap());
    let mut seed_index = [0u8; MESSAGE_BOX_INDEX_SIZE];
    seed_index[..8].copy_from_slice(&(low + high).to_le_bytes());
    seed_index[72..].copy_from_slice(&stream[32..64]);
    let expected = MessageBoxIndex::from_bytes(&seed_index)
        .unwrap()
        .next()
        .unwrap();
    assert_eq!(cap.index(), &expected);
}

#[test]
fn starting_indices_leave_at_least_2_pow_63_boxes() {
    let starts: Vec<u64> = (0..2000).map(|seed| cap(seed).index().idx64()).collect();
    assert!(starts.iter().all(|&i| (1..=(1u64 << 63) - 1).contains(&i)));
    // The sum of two uniform halves clusters around 2^62: most starts lie in
    // the middle half of [0, 2^63), few near the ends.
    let middle = starts
        .iter()
        .filter(|&&i| (1u64 << 61..3 << 61).contains(&i))
        .count();
    assert!(
        middle > 1400,
        "only {middle} of 2000 starts in the middle half"
    );
}

#[test]
fn tombstones_open_as_tombstones_and_only_for_their_own_box() {
    let cap = cap(1);
    let mut writer = Writer::new(cap.clone(), b"c");
    let mut reader = Reader::new(cap.read_cap(), b"c");
    let first = writer.prepare_tombstone();
    assert!(first.is_tombstone());
    writer.advance().unwrap();
    let second = writer.prepare_tombstone();
    // The second box's tombstone is a valid signature, but not for the box
    // the reader expects.
    assert_eq!(
        reader.peek(&second.id, &[], &second.signature),
        Err(Error::BoxMismatch)
    );
    assert_eq!(
        reader.open_next(&first.id, &[], &first.signature),
        Ok(BoxContent::Tombstone)
    );
    assert_eq!(
        reader.open_next(&second.id, &[], &second.signature),
        Ok(BoxContent::Tombstone)
    );
}

#[test]
fn contexts_separate_streams() {
    let cap = cap(2);
    let sealed = Writer::new(cap.clone(), b"ctx_in").prepare(b"tokens");
    let mut other = Reader::new(cap.read_cap(), b"ctx_out");
    assert_ne!(other.next_box_id(), sealed.id);
    assert_eq!(
        other.open_next(&sealed.id, &sealed.ciphertext, &sealed.signature),
        Err(Error::BoxMismatch)
    );
    // Decrypting with the right index but the wrong context fails on the key.
    assert_eq!(
        cap.index().decrypt(
            b"ctx_out",
            &sealed.id,
            &sealed.ciphertext,
            &sealed.signature
        ),
        Err(Error::DecryptFailed)
    );
}

#[test]
fn mutated_caps_stay_in_lockstep_and_leave_the_old_stream() {
    let cap = cap(3);
    let salt = [0x42u8; 32];
    let mutated_writer = cap.mutate_kdf_state(&salt);
    let mutated_reader = cap.read_cap().mutate_kdf_state(&salt);
    assert_eq!(mutated_writer.index(), mutated_reader.index());
    assert_eq!(mutated_writer.index().idx64(), cap.index().idx64());
    assert_eq!(
        cap.read_cap().contains(mutated_reader.index()),
        Err(Error::NotOnStream)
    );
    let sealed = Writer::new(mutated_writer, b"x").prepare(b"voucher");
    let mut reader = Reader::new(mutated_reader, b"x");
    assert_eq!(
        reader.open_next(&sealed.id, &sealed.ciphertext, &sealed.signature),
        Ok(BoxContent::Message(b"voucher".to_vec()))
    );
}

#[test]
fn resuming_checks_the_index_is_on_the_stream() {
    let cap = cap(4);
    let ahead = cap.index().advance_to(cap.index().idx64() + 10).unwrap();
    let mut writer = Writer::resume(cap.clone(), b"r", ahead.clone()).unwrap();
    let mut reader = Reader::resume(cap.read_cap(), b"r", ahead).unwrap();
    let sealed = writer.seal_next(b"after restart").unwrap();
    assert!(reader
        .open_next(&sealed.id, &sealed.ciphertext, &sealed.signature)
        .is_ok());
    let foreign = self::cap(5).index().clone();
    assert_eq!(
        Reader::resume(cap.read_cap(), b"r", foreign).err(),
        Some(Error::NotOnStream)
    );
    let behind = MessageBoxIndex::from_bytes(
        &{
            let mut b = cap.index().to_bytes();
            b[..8].copy_from_slice(&(cap.index().idx64() - 1).to_le_bytes());
            b
        }[..],
    )
    .unwrap();
    assert_eq!(
        Writer::resume(cap.clone(), b"r", behind).err(),
        Some(Error::NotOnStream)
    );
    let mut far = cap.index().to_bytes();
    far[..8].copy_from_slice(&(cap.index().idx64() + (1 << 18) + 1).to_le_bytes());
    let far = MessageBoxIndex::from_bytes(&far[..]).unwrap();
    assert_eq!(cap.contains(&far), Err(Error::TooFarAhead));
}

#[test]
fn the_last_index_has_no_successor() {
    let mut bytes = cap(6).index().to_bytes();
    bytes[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    let last = MessageBoxIndex::from_bytes(&bytes[..]).unwrap();
    assert_eq!(last.next(), Err(Error::IndexExhausted));
    let cap = cap(6).with_index(last);
    let mut writer = Writer::new(cap.clone(), b"z");
    let tombstone = writer.prepare_tombstone();
    assert_eq!(
        writer.seal_next(b"one more").err(),
        Some(Error::IndexExhausted)
    );
    assert_eq!(writer.advance(), Err(Error::IndexExhausted));
    let reader = Reader::new(cap.read_cap(), b"z");
    assert_eq!(
        reader.peek(&tombstone.id, &[], &tombstone.signature),
        Ok(BoxContent::Tombstone)
    );
}

#[test]
fn debug_output_holds_no_secrets() {
    let cap = cap(8);
    let secret_hex = |bytes: &[u8]| -> Vec<String> { bytes.chunks(8).map(hex::encode).collect() };
    let bytes = cap.to_bytes();
    let printed = format!(
        "{cap:?} {:?} {:?} {:?} {:?}",
        cap.read_cap(),
        cap.index(),
        Writer::new(cap.clone(), b"secret-context"),
        Reader::new(cap.read_cap(), b"secret-context")
    );
    for chunk in secret_hex(&bytes[..32])
        .iter()
        .chain(&secret_hex(&bytes[72..]))
    {
        assert!(!printed.contains(chunk.as_str()), "{printed} leaks {chunk}");
    }
    assert!(!printed.contains("secret-context"));
    let content = format!("{:?}", BoxContent::Message(b"my private prompt".to_vec()));
    assert_eq!(content, "Message(17 bytes)");
    assert!(printed.contains(&hex::encode(cap.root_public_key())));
}
