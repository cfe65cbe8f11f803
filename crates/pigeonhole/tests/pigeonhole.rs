//! The Pigeonhole state machines on their own: envelopes open only for the
//! replica they name and look alike whatever they ask; the courier forwards
//! once, holds SURBs, ACKs, answers from its cache and refuses bad input;
//! rendezvous hashing; the write-once rules; streams; reads that wait for
//! their box.

use funion_bacap::{BoxId, BoxSignature, SealedBox, WriteCap, Writer};
use funion_pigeonhole::courier::{Courier, CourierConfig, CourierOutput};
use funion_pigeonhole::envelope::{
    self, CourierAnswer, CourierEnvelope, Recipient, ReplicaReply, Request, Sizes,
};
use funion_pigeonhole::replica::{decide_write, WriteDecision};
use funion_pigeonhole::wire::StorageMessage;
use funion_pigeonhole::{shard, stream, ErrorCode};
use funion_sphinx::kem::{Kem, XWing, X25519};
use funion_sphinx::NodeId;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

const CONTEXT: &[u8] = b"test";

struct Replica<K: Kem> {
    id: NodeId,
    secret: K::SecretKey,
    public: K::PublicKey,
}

fn replicas<K: Kem>(rng: &mut ChaCha20Rng, n: usize) -> Vec<Replica<K>> {
    (0..n)
        .map(|i| {
            let (secret, public) = K::generate(rng);
            Replica {
                id: NodeId([i as u8 + 1; 32]),
                secret,
                public,
            }
        })
        .collect()
}

fn seal<K: Kem>(
    sizes: &Sizes,
    to: [&Replica<K>; 2],
    request: &Request,
    rng: &mut ChaCha20Rng,
) -> (Vec<u8>, envelope::ReplyKeys) {
    let recipients = to.map(|r| Recipient::<K> {
        id: r.id,
        public_key: &r.public,
    });
    envelope::seal(sizes, recipients, 0, request, rng).unwrap()
}

fn a_box(rng: &mut ChaCha20Rng, plaintext: &[u8]) -> (WriteCap, SealedBox) {
    let cap = WriteCap::generate(rng);
    let item = Writer::new(cap.clone(), CONTEXT).prepare(plaintext);
    (cap, item)
}

fn round_trip<K: Kem>() {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let sizes = Sizes::fit(K::CIPHERTEXT_LEN, 20_000).unwrap();
    let nodes = replicas::<K>(&mut rng, 2);
    let (cap, item) = a_box(&mut rng, b"hello");
    let tombstone = Writer::new(cap, CONTEXT).prepare_tombstone();
    let requests = [
        Request::Write(item.clone()),
        Request::Read(item.id),
        Request::Write(tombstone),
    ];
    for request in &requests {
        let (bytes, keys) = seal(&sizes, [&nodes[0], &nodes[1]], request, &mut rng);
        // Reads, writes and tombstones are all the same size.
        assert_eq!(bytes.len(), sizes.body_len());
        let envelope = CourierEnvelope::parse(&sizes, &bytes).unwrap();
        assert_eq!(envelope.intermediates(), [nodes[0].id, nodes[1].id]);
        for slot in 0..2u8 {
            let part = envelope.for_replica(slot);
            let node = &nodes[usize::from(slot)];
            let (opened, key) = part.open::<K>(&sizes, &node.id, &[&node.secret]).unwrap();
            assert_eq!(&opened, request);
            // The other replica's key does not open this slot.
            let other = &nodes[1 - usize::from(slot)];
            assert!(part.open::<K>(&sizes, &node.id, &[&other.secret]).is_err());
            // Nor does a replica the envelope does not name.
            assert_eq!(
                part.open::<K>(&sizes, &other.id, &[&node.secret]).err(),
                Some(ErrorCode::UnknownReplica)
            );
            let reply = ReplicaReply {
                code: ErrorCode::Ok,
                found: Some(item.clone()),
            };
            let sealed = key.seal(&sizes, &reply);
            assert_eq!(sealed.len(), sizes.sealed_reply_len());
            let courier_reply = envelope::courier_reply(
                &sizes,
                &envelope.hash(),
                slot,
                ErrorCode::Ok,
                Some(&sealed),
            );
            assert_eq!(courier_reply.len(), sizes.reply_len());
            assert_eq!(
                keys.open(&sizes, &courier_reply).unwrap(),
                CourierAnswer::Reply { slot, reply }
            );
            // A reply sealed for an empty answer is just as long.
            let empty = key.seal(
                &sizes,
                &ReplicaReply {
                    code: ErrorCode::NotFound,
                    found: None,
                },
            );
            assert_eq!(empty.len(), sealed.len());
        }
    }
}

#[test]
fn envelopes_round_trip_with_xwing() {
    round_trip::<XWing>();
}

#[test]
fn envelopes_round_trip_with_x25519() {
    round_trip::<X25519>();
}

#[test]
fn tampered_or_misdirected_envelopes_are_refused() {
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let sizes = Sizes::fit(X25519::CIPHERTEXT_LEN, 4_000).unwrap();
    let nodes = replicas::<X25519>(&mut rng, 3);
    let (_, item) = a_box(&mut rng, b"x");
    let (bytes, _) = seal(
        &sizes,
        [&nodes[0], &nodes[1]],
        &Request::Write(item),
        &mut rng,
    );
    // Padding after the envelope is ignored; a length that is not the
    // envelope size, or an envelope cut short, is refused.
    let mut padded = bytes.clone();
    padded.extend_from_slice(&[0; 100]);
    assert!(CourierEnvelope::parse(&sizes, &padded).is_ok());
    for len in [sizes.request_len() - 1, sizes.request_len() + 1, 0] {
        let mut wrong = padded.clone();
        wrong[..4].copy_from_slice(&(len as u32).to_le_bytes());
        assert_eq!(
            CourierEnvelope::parse(&sizes, &wrong).err(),
            Some(ErrorCode::WrongSize)
        );
    }
    for cut in [0, 3, bytes.len() - 1] {
        assert_eq!(
            CourierEnvelope::parse(&sizes, &bytes[..cut]).err(),
            Some(ErrorCode::WrongSize)
        );
    }
    // Any flipped bit in the body or the header fails authentication.
    for at in [4usize, 9, 40, bytes.len() - 1, bytes.len() / 2] {
        let mut bad = bytes.clone();
        bad[at] ^= 0x10;
        let Ok(envelope) = CourierEnvelope::parse(&sizes, &bad) else {
            continue;
        };
        let part = envelope.for_replica(0);
        let opened = part.open::<X25519>(&sizes, &nodes[0].id, &[&nodes[0].secret]);
        assert!(opened.is_err(), "bit flipped at {at} went unnoticed");
    }
    // A courier redirecting slot 0 to another replica gets nothing.
    let envelope = CourierEnvelope::parse(&sizes, &bytes).unwrap();
    let part = envelope.for_replica(0);
    assert_eq!(
        part.open::<X25519>(&sizes, &nodes[2].id, &[&nodes[2].secret])
            .err(),
        Some(ErrorCode::UnknownReplica)
    );
}

#[test]
fn boxes_too_large_for_the_envelope_are_refused_by_the_client() {
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let sizes = Sizes::fit(X25519::CIPHERTEXT_LEN, 2_000).unwrap();
    let nodes = replicas::<X25519>(&mut rng, 2);
    let (_, item) = a_box(&mut rng, &vec![7u8; sizes.max_plaintext() + 1]);
    let recipients = [&nodes[0], &nodes[1]].map(|r| Recipient::<X25519> {
        id: r.id,
        public_key: &r.public,
    });
    assert!(matches!(
        envelope::seal(&sizes, recipients, 0, &Request::Write(item), &mut rng),
        Err(envelope::EnvelopeError::BoxTooLarge { .. })
    ));
    assert!(Sizes::fit(XWing::CIPHERTEXT_LEN, 2_000).is_err());
}

fn courier_setup() -> (
    ChaCha20Rng,
    Sizes,
    Vec<Replica<X25519>>,
    Courier,
    Vec<u8>,
    envelope::ReplyKeys,
) {
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    let sizes = Sizes::fit(X25519::CIPHERTEXT_LEN, 4_000).unwrap();
    let nodes = replicas::<X25519>(&mut rng, 2);
    let (_, item) = a_box(&mut rng, b"courier");
    let (bytes, keys) = seal(
        &sizes,
        [&nodes[0], &nodes[1]],
        &Request::Write(item),
        &mut rng,
    );
    let config = CourierConfig {
        hold_us: 1_000,
        wait_hold_us: 40_000,
        forward_again_us: 50_000,
        cache_us: 1_000_000,
        max_entries: 10,
    };
    (rng, sizes, nodes, Courier::new(sizes, config), bytes, keys)
}

fn replies(outputs: &[CourierOutput]) -> Vec<(Vec<u8>, Vec<u8>)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            CourierOutput::Reply { surb, message } => Some((surb.clone(), message.clone())),
            _ => None,
        })
        .collect()
}

fn forwarded(outputs: &[CourierOutput]) -> Vec<NodeId> {
    outputs
        .iter()
        .filter_map(|o| match o {
            CourierOutput::ToReplica { replica, .. } => Some(*replica),
            _ => None,
        })
        .collect()
}

#[test]
fn the_courier_forwards_once_acks_and_answers_from_its_cache() {
    let (_, sizes, nodes, mut courier, bytes, keys) = courier_setup();
    let known = |id: &NodeId| id.0[0] <= 2;
    let first = courier.handle_request(0, b"surb-1".to_vec(), &bytes, known);
    assert_eq!(forwarded(&first), vec![nodes[0].id, nodes[1].id]);
    assert!(replies(&first).is_empty(), "held, not answered yet");
    // A resend before any reply is joined to the pending envelope.
    let again = courier.handle_request(100, b"surb-2".to_vec(), &bytes, known);
    assert!(again.is_empty());
    assert_eq!(courier.next_deadline(), Some(1_000));
    // After the hold time both SURBs get an ACK.
    let acks = replies(&courier.poll(1_100));
    assert_eq!(acks.len(), 2);
    for (_, message) in &acks {
        assert_eq!(message.len(), sizes.reply_len());
        assert_eq!(keys.open(&sizes, message).unwrap(), CourierAnswer::Pending);
    }
    // Replica 0 answers: a message claiming to be its slot from replica 1
    // is ignored, the real one is cached.
    let CourierOutput::ToReplica { message, .. } = &first[0] else {
        unreachable!()
    };
    let StorageMessage::Envelope(part) = StorageMessage::decode(message).unwrap() else {
        panic!("an envelope goes to the replica")
    };
    let (_, key) = part
        .open::<X25519>(&sizes, &nodes[0].id, &[&nodes[0].secret])
        .unwrap();
    let reply = ReplicaReply {
        code: ErrorCode::Ok,
        found: None,
    };
    let answer = StorageMessage::EnvelopeReply {
        hash: part.hash,
        slot: 0,
        code: ErrorCode::Ok,
        sealed: key.seal(&sizes, &reply),
    }
    .encode();
    assert!(courier
        .handle_replica_message(2_000, nodes[1].id, &answer)
        .is_empty());
    assert_eq!(courier.counters().stray, 1);
    assert!(courier
        .handle_replica_message(2_000, nodes[0].id, &answer)
        .is_empty());
    assert!(courier
        .handle_replica_message(2_000, nodes[0].id, b"garbage")
        .is_empty());
    // The poll is answered from the cache, without forwarding again.
    let poll = courier.handle_request(3_000, b"surb-3".to_vec(), &bytes, known);
    assert!(forwarded(&poll).is_empty());
    let answered = replies(&poll);
    assert_eq!(answered[0].0, b"surb-3");
    assert_eq!(
        keys.open(&sizes, &answered[0].1).unwrap(),
        CourierAnswer::Reply { slot: 0, reply }
    );
    // Forgotten after the cache time.
    courier.poll(2_000_000);
    assert_eq!(courier.entries(), 0);
}

#[test]
fn a_held_surb_is_answered_when_the_reply_arrives() {
    let (_, sizes, nodes, mut courier, bytes, keys) = courier_setup();
    let first = courier.handle_request(0, b"surb".to_vec(), &bytes, |_| true);
    let CourierOutput::ToReplica { message, .. } = &first[1] else {
        unreachable!()
    };
    let StorageMessage::Envelope(part) = StorageMessage::decode(message).unwrap() else {
        panic!("an envelope goes to the replica")
    };
    let (_, key) = part
        .open::<X25519>(&sizes, &nodes[1].id, &[&nodes[1].secret])
        .unwrap();
    let reply = ReplicaReply {
        code: ErrorCode::Conflict,
        found: None,
    };
    let answer = StorageMessage::EnvelopeReply {
        hash: part.hash,
        slot: 1,
        code: ErrorCode::Ok,
        sealed: key.seal(&sizes, &reply),
    };
    let out = courier.handle_replica_message(500, nodes[1].id, &answer.encode());
    let answered = replies(&out);
    assert_eq!(answered.len(), 1);
    assert_eq!(
        keys.open(&sizes, &answered[0].1).unwrap(),
        CourierAnswer::Reply { slot: 1, reply }
    );
    // Nothing left to ACK.
    assert!(courier.poll(10_000).is_empty());
}

#[test]
fn the_courier_refuses_bad_envelopes_through_the_surb() {
    let (_, sizes, _, mut courier, bytes, keys) = courier_setup();
    let out = courier.handle_request(0, b"s".to_vec(), &bytes[..100], |_| true);
    let answered = replies(&out);
    assert_eq!(answered.len(), 1);
    assert_eq!(answered[0].1.len(), sizes.reply_len());
    assert_eq!(
        envelope::refusal(&answered[0].1),
        Some(ErrorCode::WrongSize)
    );
    // Intermediates the network does not list.
    let out = courier.handle_request(0, b"s".to_vec(), &bytes, |_| false);
    assert!(forwarded(&out).is_empty());
    assert_eq!(
        keys.open(&sizes, &replies(&out)[0].1).unwrap(),
        CourierAnswer::Refused(ErrorCode::UnknownReplica)
    );
    assert_eq!(courier.counters().refused, 2);
}

#[test]
fn the_courier_remembers_a_bounded_number_of_envelopes() {
    let (mut rng, sizes, nodes, mut courier, _, _) = courier_setup();
    for i in 0..11 {
        let (_, item) = a_box(&mut rng, &[i]);
        let (bytes, keys) = seal(
            &sizes,
            [&nodes[0], &nodes[1]],
            &Request::Write(item),
            &mut rng,
        );
        let out = courier.handle_request(0, vec![i], &bytes, |_| true);
        if i < 10 {
            assert_eq!(forwarded(&out).len(), 2);
        } else {
            assert_eq!(
                keys.open(&sizes, &replies(&out)[0].1).unwrap(),
                CourierAnswer::Refused(ErrorCode::Unavailable)
            );
        }
    }
}

#[test]
fn holders_are_stable_and_intermediates_avoid_them() {
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let nodes: Vec<NodeId> = (0..6).map(|i| NodeId([i; 32])).collect();
    let mut counts = [0usize; 6];
    for i in 0..600u32 {
        let mut id = [0u8; 32];
        id[..4].copy_from_slice(&i.to_le_bytes());
        let box_id = BoxId(id);
        let holders = shard::holders(&box_id, &nodes, 2);
        assert_eq!(holders.len(), 2);
        assert_ne!(holders[0], holders[1]);
        // Independent of the order replicas are listed in.
        let mut reversed = nodes.clone();
        reversed.reverse();
        assert_eq!(shard::holders(&box_id, &reversed, 2), holders);
        // Removing a non-holder does not move the box.
        let fewer: Vec<NodeId> = nodes
            .iter()
            .filter(|n| !holders.contains(n))
            .skip(1)
            .chain(holders.iter())
            .copied()
            .collect();
        assert_eq!(shard::holders(&box_id, &fewer, 2), holders);
        let [a, b] = shard::intermediates(&box_id, &nodes, 2, &mut rng).unwrap();
        assert_ne!(a, b);
        assert!(!holders.contains(&a) && !holders.contains(&b));
        for h in holders {
            counts[h.0[0] as usize] += 1;
        }
    }
    // 1,200 holder slots over 6 replicas: about 200 each.
    assert!(
        counts.iter().all(|&c| (140..=260).contains(&c)),
        "{counts:?}"
    );
    // With 3 replicas intermediates must overlap the holders; with 1 there
    // are none.
    let three = &nodes[..3];
    assert!(shard::intermediates(&BoxId([9; 32]), three, 2, &mut rng).is_some());
    assert!(shard::intermediates(&BoxId([9; 32]), &nodes[..1], 2, &mut rng).is_none());
}

#[test]
fn boxes_are_write_once_and_tombstones_end_them() {
    let mut rng = ChaCha20Rng::seed_from_u64(6);
    let cap = WriteCap::generate(&mut rng);
    let writer = Writer::new(cap.clone(), CONTEXT);
    let first = writer.prepare(b"first");
    let other = writer.prepare(b"other bytes");
    let tombstone = writer.prepare_tombstone();
    assert_eq!(first.id, other.id);
    assert_eq!(decide_write(None, &first), WriteDecision::Store);
    assert_eq!(
        decide_write(Some(&first), &first),
        WriteDecision::AlreadyStored
    );
    assert_eq!(
        decide_write(Some(&first), &other),
        WriteDecision::Refuse(ErrorCode::Conflict)
    );
    assert_eq!(decide_write(Some(&first), &tombstone), WriteDecision::Store);
    assert_eq!(
        decide_write(Some(&tombstone), &first),
        WriteDecision::Refuse(ErrorCode::Conflict)
    );
    let mut forged = first.clone();
    forged.signature = BoxSignature([1; 64]);
    assert_eq!(
        decide_write(None, &forged),
        WriteDecision::Refuse(ErrorCode::BadSignature)
    );
    let mut moved = first.clone();
    moved.ciphertext[0] ^= 1;
    assert_eq!(
        decide_write(None, &moved),
        WriteDecision::Refuse(ErrorCode::BadSignature)
    );
}

#[test]
fn streams_split_into_equal_boxes_and_join_back() {
    for len in [0usize, 1, 91, 92, 93, 1000] {
        let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let boxes = stream::split(&data, 100);
        assert_eq!(boxes.len(), (8 + len).div_ceil(100));
        assert!(boxes.iter().all(|b| b.len() == 100));
        assert_eq!(
            stream::length(&boxes[0], 1 << 20).unwrap(),
            (len as u64, boxes.len())
        );
        assert_eq!(stream::join(&boxes).unwrap(), data);
    }
    let boxes = stream::split(&[1; 500], 100);
    assert!(stream::join(&boxes[..3]).is_err());
    assert!(stream::length(&boxes[0], 10).is_err());
    let mut huge = vec![0xff; 100];
    huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(stream::length(&huge, u64::MAX).is_err());
}

#[test]
fn the_storage_client_polls_a_silent_courier_a_bounded_number_of_times() {
    use funion_pigeonhole::client::{ClientConfig, StorageClient};
    use funion_pigeonhole::envelope::CourierEnvelope;
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let sizes = Sizes::fit(32, 3_000).unwrap();
    let keys: Vec<(NodeId, [u8; 32])> = replicas::<X25519>(&mut rng, 4)
        .into_iter()
        .map(|r| (r.id, r.public))
        .collect();
    let config = ClientConfig::new(2);
    let (max_polls, retry) = (config.max_polls, config.retry_delay_us);
    let mut client = StorageClient::<X25519>::new(config, sizes, keys, 2).unwrap();
    let (_, item) = a_box(&mut rng, b"hello");
    client
        .start(&mut rng, vec![Request::Read(item.id)])
        .unwrap();
    let mut echo = client.take_echoes().pop().expect("one echo");
    let hash = CourierEnvelope::parse(&sizes, &echo.body).unwrap().hash();
    let ack = envelope::courier_reply(&sizes, &hash, 0, ErrorCode::Ok, None);
    // Every ACK gets a poll of the same envelope, up to the limit ...
    for _ in 0..max_polls {
        assert!(client.handle_reply(0, echo.seq, &ack));
        let polls = client.take_echoes();
        assert_eq!(polls.len(), 1);
        assert_eq!(polls[0].body, echo.body, "a poll sends the same envelope");
        echo = polls.into_iter().next().unwrap();
    }
    assert_eq!(client.stats().polls, u64::from(max_polls));
    // ... then the envelope counts as failed and a fresh one (with new
    // intermediates) goes out after the retry delay.
    assert!(client.handle_reply(0, echo.seq, &ack));
    assert!(client.take_echoes().is_empty());
    assert_eq!(client.next_wakeup(), Some(retry));
    client.poll(retry, &mut rng).unwrap();
    let fresh = client.take_echoes();
    assert_eq!(fresh.len(), 1);
    assert_ne!(fresh[0].body, echo.body);
    assert_eq!(client.stats().fresh_envelopes, 1);
}

/// Four replica state machines over memory stores, messages handed over at
/// once; what they send the courier comes back.
struct Cluster {
    ids: Vec<NodeId>,
    machines: Vec<funion_pigeonhole::replica::Replica<X25519>>,
    stores: Vec<funion_pigeonhole::replica::storage::MemoryStore>,
    publics: Vec<[u8; 32]>,
}

const COURIER: NodeId = NodeId([0xCC; 32]);

impl Cluster {
    fn new(rng: &mut ChaCha20Rng, sizes: Sizes) -> Self {
        Self::tuned(rng, sizes, |_| {})
    }

    fn tuned(
        rng: &mut ChaCha20Rng,
        sizes: Sizes,
        tune: impl Fn(&mut funion_pigeonhole::replica::ReplicaConfig),
    ) -> Self {
        use funion_pigeonhole::replica::{Replica as Machine, ReplicaConfig};
        let replicas = replicas::<X25519>(rng, 4);
        let ids: Vec<NodeId> = replicas.iter().map(|r| r.id).collect();
        let publics = replicas.iter().map(|r| r.public).collect();
        let machines = replicas
            .into_iter()
            .map(|r| {
                let mut config = ReplicaConfig::new(r.id, sizes, 2, 3_600);
                tune(&mut config);
                let mut m = Machine::<X25519>::new(config);
                m.add_epoch_key(0, r.secret);
                m.set_epoch(0);
                m.set_replicas(ids.clone());
                m
            })
            .collect();
        let stores = (0..4)
            .map(|_| funion_pigeonhole::replica::storage::MemoryStore::new(3_600_000))
            .collect();
        Cluster {
            ids,
            machines,
            stores,
            publics,
        }
    }

    /// Runs every effect to quiescence; returns what reached the courier.
    fn pump(&mut self, now: u64) -> Vec<StorageMessage> {
        use funion_pigeonhole::replica::storage::execute;
        use funion_pigeonhole::replica::ReplicaEffect;
        let mut to_courier = Vec::new();
        loop {
            let mut busy = false;
            for r in 0..self.machines.len() {
                for effect in self.machines[r].take_effects() {
                    busy = true;
                    match effect {
                        ReplicaEffect::Send { to, bytes } if to == COURIER => {
                            to_courier.push(StorageMessage::decode(&bytes).unwrap())
                        }
                        ReplicaEffect::Send { to, bytes } => {
                            let target = self.ids.iter().position(|id| *id == to).unwrap();
                            let from = self.ids[r];
                            self.machines[target].handle(now, from, &bytes);
                        }
                        ReplicaEffect::Storage(effect) => {
                            let answer = execute(&mut self.stores[r], effect, now / 1000);
                            self.machines[r].answer(now, answer);
                        }
                    }
                }
            }
            if !busy {
                return to_courier;
            }
        }
    }

    /// Seals `request` to two intermediates that are not the box's holders
    /// and hands intermediate `slot` its part.
    fn send(
        &mut self,
        rng: &mut ChaCha20Rng,
        sizes: &Sizes,
        request: &Request,
        id: &BoxId,
    ) -> envelope::ReplyKeys {
        let holders = shard::holders(id, &self.ids, 2);
        let others: Vec<usize> = (0..4)
            .filter(|i| !holders.contains(&self.ids[*i]))
            .collect();
        let recipients = [others[0], others[1]].map(|i| Recipient::<X25519> {
            id: self.ids[i],
            public_key: &self.publics[i],
        });
        let (body, keys) = envelope::seal(sizes, recipients, 0, request, rng).unwrap();
        let envelope = envelope::CourierEnvelope::parse(sizes, &body).unwrap();
        let message = StorageMessage::Envelope(envelope.for_replica(0)).encode();
        self.machines[others[0]].handle(0, COURIER, &message);
        keys
    }

    fn holding(&mut self, id: &BoxId) -> usize {
        use funion_pigeonhole::replica::storage::BoxStorage;
        self.stores
            .iter_mut()
            .map(|s| s.get(id, 0))
            .filter(|found| matches!(found, Ok(Some(_))))
            .count()
    }
}

/// Opens a courier's envelope reply to the replica's answer inside.
fn opened(
    sizes: &Sizes,
    keys: &envelope::ReplyKeys,
    reply: &StorageMessage,
) -> envelope::ReplicaReply {
    let StorageMessage::EnvelopeReply {
        hash,
        slot,
        code,
        sealed,
    } = reply
    else {
        panic!("not an envelope reply: {reply:?}");
    };
    let bytes = envelope::courier_reply(sizes, hash, *slot, *code, Some(sealed));
    match keys.open(sizes, &bytes).unwrap() {
        envelope::CourierAnswer::Reply { reply, .. } => reply,
        other => panic!("expected a sealed reply, got {other:?}"),
    }
}

fn answer_code(sizes: &Sizes, keys: &envelope::ReplyKeys, reply: &StorageMessage) -> ErrorCode {
    opened(sizes, keys, reply).code
}

#[test]
fn the_replica_machine_acknowledges_only_what_its_store_made_durable() {
    let mut rng = ChaCha20Rng::seed_from_u64(11);
    let sizes = Sizes::fit(32, 3_000).unwrap();
    let mut cluster = Cluster::new(&mut rng, sizes);
    let (_, item) = a_box(&mut rng, b"durable");
    // A write: Ok comes back once a holder's store took it, and both
    // holders have it.
    let keys = cluster.send(&mut rng, &sizes, &Request::Write(item.clone()), &item.id);
    let replies = cluster.pump(0);
    assert_eq!(replies.len(), 1, "one answer for the courier");
    assert_eq!(answer_code(&sizes, &keys, &replies[0]), ErrorCode::Ok);
    assert_eq!(cluster.holding(&item.id), 2);
    // A read through other intermediates finds it.
    let keys = cluster.send(&mut rng, &sizes, &Request::Read(item.id), &item.id);
    let replies = cluster.pump(0);
    assert_eq!(answer_code(&sizes, &keys, &replies[0]), ErrorCode::Ok);
    // With both holders' disks gone, a new write is refused as a storage
    // failure and nothing is stored anywhere.
    let (_, other) = a_box(&mut rng, b"lost?");
    for (i, id) in cluster.ids.clone().iter().enumerate() {
        if shard::holders(&other.id, &cluster.ids, 2).contains(id) {
            cluster.stores[i].failing = true;
        }
    }
    let keys = cluster.send(&mut rng, &sizes, &Request::Write(other.clone()), &other.id);
    let replies = cluster.pump(0);
    assert_eq!(
        answer_code(&sizes, &keys, &replies[0]),
        ErrorCode::StorageFailure
    );
    for store in &mut cluster.stores {
        store.failing = false;
    }
    assert_eq!(
        cluster.holding(&other.id),
        0,
        "a refused write stores nothing"
    );
}

fn found_box(sizes: &Sizes, keys: &envelope::ReplyKeys, reply: &StorageMessage) -> Option<BoxId> {
    opened(sizes, keys, reply).found.map(|b| b.id)
}

#[test]
fn a_waiting_read_is_answered_when_its_box_is_written_and_not_before() {
    let mut rng = ChaCha20Rng::seed_from_u64(12);
    let sizes = Sizes::fit(32, 3_000).unwrap();
    let mut cluster = Cluster::tuned(&mut rng, sizes, |c| c.max_wait_us = 5_000_000);
    let (_, item) = a_box(&mut rng, b"later");
    // The control: a plain read of a box not written yet is answered at
    // once, NotFound.
    let keys = cluster.send(&mut rng, &sizes, &Request::Read(item.id), &item.id);
    let replies = cluster.pump(0);
    assert_eq!(answer_code(&sizes, &keys, &replies[0]), ErrorCode::NotFound);
    // A waiting read of it gets no answer, even past the holders' timeout.
    let request = Request::Await {
        id: item.id,
        wait_ms: 60_000,
    };
    let read_keys = cluster.send(&mut rng, &sizes, &request, &item.id);
    assert!(cluster.pump(0).is_empty(), "parked, not answered");
    for machine in &mut cluster.machines {
        machine.tick(3_500_000);
    }
    assert!(cluster.pump(3_500_000).is_empty(), "still parked");
    // The box is written through another envelope: the write's answer and
    // the waiting read's, with the box, come back together.
    let write_keys = cluster.send(&mut rng, &sizes, &Request::Write(item.clone()), &item.id);
    let replies = cluster.pump(4_000_000);
    assert_eq!(replies.len(), 2, "{replies:?}");
    let for_read = |r: &StorageMessage| match r {
        StorageMessage::EnvelopeReply {
            hash,
            slot,
            code,
            sealed,
        } => {
            let bytes = envelope::courier_reply(&sizes, hash, *slot, *code, Some(sealed));
            read_keys.open(&sizes, &bytes).is_ok()
        }
        _ => false,
    };
    let (read, write) = match (for_read(&replies[0]), for_read(&replies[1])) {
        (true, false) => (&replies[0], &replies[1]),
        (false, true) => (&replies[1], &replies[0]),
        other => panic!("one answer each expected: {other:?}"),
    };
    assert_eq!(answer_code(&sizes, &write_keys, write), ErrorCode::Ok);
    assert_eq!(found_box(&sizes, &read_keys, read), Some(item.id));
    let parked: u64 = cluster
        .machines
        .iter()
        .map(|m| m.counters().get("reads_parked").copied().unwrap_or(0))
        .sum();
    assert_eq!(parked, 2, "both holders parked the read");
}

#[test]
fn a_waiting_read_gives_up_after_the_capped_wait_and_parks_a_bounded_number() {
    let mut rng = ChaCha20Rng::seed_from_u64(13);
    let sizes = Sizes::fit(32, 3_000).unwrap();
    let mut cluster = Cluster::tuned(&mut rng, sizes, |c| {
        c.max_wait_us = 2_000_000;
        c.max_waiting_reads = 1;
    });
    let (_, never) = a_box(&mut rng, b"never written");
    // It asked for a minute; the replicas wait two seconds.
    let request = Request::Await {
        id: never.id,
        wait_ms: 60_000,
    };
    let keys = cluster.send(&mut rng, &sizes, &request, &never.id);
    assert!(cluster.pump(0).is_empty());
    for machine in &mut cluster.machines {
        machine.tick(1_900_000);
    }
    assert!(cluster.pump(1_900_000).is_empty(), "within the wait");
    for machine in &mut cluster.machines {
        machine.tick(2_100_000);
    }
    let replies = cluster.pump(2_100_000);
    assert_eq!(replies.len(), 1);
    assert_eq!(answer_code(&sizes, &keys, &replies[0]), ErrorCode::NotFound);
    // Each holder parks one read at most: a waiting read of a second box
    // with the same holders finds no room and is answered at once.
    let (_, first) = a_box(&mut rng, b"first");
    let holders_first = shard::holders(&first.id, &cluster.ids, 2);
    let second = loop {
        let (_, candidate) = a_box(&mut rng, b"second");
        let mut holders = shard::holders(&candidate.id, &cluster.ids, 2);
        let mut wanted = holders_first.clone();
        holders.sort_by_key(|h| h.0);
        wanted.sort_by_key(|h| h.0);
        if holders == wanted {
            break candidate;
        }
    };
    let await_of = |id: BoxId| Request::Await { id, wait_ms: 1_000 };
    cluster.send(&mut rng, &sizes, &await_of(first.id), &first.id);
    assert!(cluster.pump(3_000_000).is_empty(), "the first is parked");
    let keys = cluster.send(&mut rng, &sizes, &await_of(second.id), &second.id);
    let replies = cluster.pump(3_000_000);
    assert_eq!(replies.len(), 1, "no holder had room");
    assert_eq!(answer_code(&sizes, &keys, &replies[0]), ErrorCode::NotFound);
}

#[test]
fn the_waiting_service_holds_the_surb_for_the_longer_time() {
    let (_, sizes, _, mut courier, bytes, keys) = courier_setup();
    let first = courier.handle_waiting_request(0, b"surb".to_vec(), &bytes, |_| true);
    assert_eq!(forwarded(&first).len(), 2);
    // Past the ordinary hold (1 ms) there is nothing to ACK yet ...
    assert!(courier.poll(1_100).is_empty());
    assert_eq!(courier.next_deadline(), Some(40_000));
    // ... and past the waiting hold (40 ms) the ACK goes back.
    let acks = replies(&courier.poll(40_000));
    assert_eq!(acks.len(), 1);
    assert_eq!(
        keys.open(&sizes, &acks[0].1).unwrap(),
        CourierAnswer::Pending
    );
}

#[test]
fn a_peer_cannot_cancel_or_answer_another_peers_operation() {
    let mut rng = ChaCha20Rng::seed_from_u64(23);
    let sizes = Sizes::fit(32, 3_000).unwrap();
    let mut cluster = Cluster::new(&mut rng, sizes);
    let (_, item) = a_box(&mut rng, b"mine");
    let keys = cluster.send(&mut rng, &sizes, &Request::Write(item.clone()), &item.id);
    // The intermediate now waits on the two holders. Every other peer,
    // replica or not, answers every request number it could guess with a
    // failure.
    let holders = shard::holders(&item.id, &cluster.ids, 2);
    // `Cluster::send` hands the envelope to the first replica that is not
    // a holder.
    let intermediate = (0..4)
        .find(|i| !holders.contains(&cluster.ids[*i]))
        .unwrap();
    let stranger = NodeId([0xEE; 32]);
    let others: Vec<NodeId> = cluster
        .ids
        .iter()
        .copied()
        .filter(|id| !holders.contains(id) && *id != cluster.ids[intermediate])
        .chain([stranger, COURIER])
        .collect();
    for from in &others {
        for request in 0..64 {
            let forged = StorageMessage::WriteReply {
                request,
                code: ErrorCode::StorageFailure,
            };
            cluster.machines[intermediate].handle(0, *from, &forged.encode());
        }
    }
    // The holders' own answers still count: the write is acknowledged.
    let replies = cluster.pump(0);
    assert_eq!(replies.len(), 1);
    assert_eq!(answer_code(&sizes, &keys, &replies[0]), ErrorCode::Ok);
    assert_eq!(cluster.holding(&item.id), 2);
    let counters = cluster.machines[intermediate].counters();
    assert!(
        counters.get("stray_replies").copied().unwrap_or(0) >= 64,
        "{counters:?}"
    );
    assert!(
        counters.get("not_from_a_replica").copied().unwrap_or(0) >= 128,
        "{counters:?}"
    );

    // A peer that is not a replica cannot write to a holder directly.
    let (_, other) = a_box(&mut rng, b"forged");
    let target = cluster
        .ids
        .iter()
        .position(|id| shard::holders(&other.id, &cluster.ids, 2).contains(id))
        .unwrap();
    let write = StorageMessage::Write {
        request: 1,
        item: funion_pigeonhole::wire::WireBox::from(&other),
        replicate: true,
    };
    cluster.machines[target].handle(0, stranger, &write.encode());
    cluster.pump(0);
    assert_eq!(cluster.holding(&other.id), 0);
}
