//! How the client core and the node behave when they fall behind: missed
//! send slots shed their loops (requests still go), retransmission backs
//! off and a late reply still answers, a node sheds packets that waited too
//! long before it opened them, and reply queues stay bounded and expire.

use funion_mixnet::{
    Client, ClientConfig, ClientEvent, DropReason, Hop, Node, NodeConfig, Output, Source, Topology,
};
use funion_pki::Role;
use funion_sphinx::kem::{Kem, X25519};
use funion_sphinx::{Geometry, NodeId};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

const RECIPIENT: [u8; 32] = [7; 32];

/// A gateway, one mix per layer and a service, with their state machines.
struct Net {
    geometry: Geometry,
    nodes: Vec<(NodeId, Node<X25519>)>,
    topology: Topology<X25519>,
}

fn net(rng: &mut ChaCha20Rng) -> Net {
    net_with(rng, |_| {})
}

/// [`net`], with the gateway's config changed by `gateway`.
fn net_with(rng: &mut ChaCha20Rng, gateway: impl FnOnce(&mut NodeConfig)) -> Net {
    let mut gateway = Some(gateway);
    let geometry = Geometry::new::<X25519>(2048, 5).unwrap();
    let roles = [
        Role::Gateway,
        Role::Mix,
        Role::Mix,
        Role::Mix,
        Role::Service,
    ];
    let mut nodes = Vec::new();
    let mut hops = Vec::new();
    for (i, role) in roles.into_iter().enumerate() {
        let (secret, public) = X25519::generate(rng);
        let id = NodeId([i as u8 + 1; 32]);
        hops.push(Hop::<X25519> {
            id,
            name: format!("n{i}"),
            public_key: public,
        });
        let mut config = NodeConfig::for_role(role, 1_000.0);
        if role == Role::Gateway {
            (gateway.take().expect("one gateway"))(&mut config);
        }
        let mut node = Node::<X25519>::new(config, geometry);
        node.add_epoch_key(0, secret, []).unwrap();
        nodes.push((id, node));
    }
    let topology = Topology {
        epoch: 0,
        gateways: vec![hops[0].clone()],
        layers: (1..4).map(|i| vec![hops[i].clone()]).collect(),
        services: vec![hops[4].clone()],
        replicas: Vec::new(),
    };
    Net {
        geometry,
        nodes,
        topology,
    }
}

fn client(net: &Net, rng: &mut ChaCha20Rng) -> Client<X25519> {
    let config = ClientConfig {
        recipient: RECIPIENT,
        mean_delay_us: 1_000.0,
        send_rate: 100.0,
        retransmit_after_us: 100_000,
        max_lag_us: 20_000,
        max_attempts: 3,
        cover: true,
        loops_through_service: true,
    };
    Client::new(config, net.geometry, net.topology.clone(), rng)
}

/// Carries `packet` from the gateway along its path, every hop's delay
/// passed at once; returns the replies that reached the client's queue
/// (taking them from the gateway only if `take`).
fn carry(net: &mut Net, now: u64, packet: Vec<u8>, take: bool) -> Vec<([u8; 16], Vec<u8>)> {
    let mut in_flight = vec![(0usize, Source::Client(1), packet)];
    let mut replies = Vec::new();
    while let Some((at, source, packet)) = in_flight.pop() {
        let mut outputs = net.nodes[at].1.handle_packet(now, source, packet);
        outputs.extend(net.nodes[at].1.poll(now + 1_000_000_000));
        let from = net.nodes[at].0;
        for output in outputs {
            match output {
                Output::Send { to, packet } => {
                    let next = net.nodes.iter().position(|(id, _)| *id == to).unwrap();
                    in_flight.push((next, Source::Peer(from), packet));
                }
                Output::ReplyQueued { recipient } if take => {
                    for reply in net.nodes[at].1.take_replies(&recipient) {
                        replies.push((reply.surb_id, reply.payload));
                    }
                }
                _ => {}
            }
        }
    }
    replies
}

#[test]
fn a_client_that_falls_behind_sheds_its_loops_but_not_its_requests() {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let net = net(&mut rng);
    let mut on_time = client(&net, &mut rng);
    // On time: every slot of a second carries a loop (about 100).
    let mut sent = 0;
    let mut now = 0;
    for _ in 0..1_000 {
        now += 1_000;
        sent += on_time.poll(now, &mut rng).0.len();
    }
    assert!(sent > 50, "{sent}");
    assert_eq!(on_time.stats().loops_shed, 0);

    // Behind by a whole second: the slots that passed are not caught up.
    let mut late = client(&net, &mut rng);
    late.poll(0, &mut rng);
    let (packets, _) = late.poll(1_000_000, &mut rng);
    assert!(packets.len() < 10, "a burst of {} loops", packets.len());
    assert!(late.stats().loops_shed > 50, "{:?}", late.stats());

    // A request waiting when the client is behind still leaves.
    late.request_echo(1, b"real".to_vec());
    let (packets, _) = late.poll(2_000_000, &mut rng);
    assert!(!packets.is_empty());
    assert_eq!(late.stats().requests_sent, 1);
    assert_eq!(late.outstanding(), 1);
}

#[test]
fn retransmission_backs_off_and_a_late_reply_still_answers() {
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let mut net = net(&mut rng);
    let mut client = client(&net, &mut rng);
    client.poll(0, &mut rng);
    client.request_echo(9, b"slow".to_vec());
    // Poll every millisecond until the request has left: the first packet
    // after the request was queued carries it.
    let mut now = 0;
    let first = loop {
        now += 1_000;
        let (packets, _) = client.poll(now, &mut rng);
        if client.stats().requests_sent == 1 {
            break packets.into_iter().next().unwrap();
        }
    };
    let sent_at = now;
    // No reply: the request is sent again after the least timeout...
    while client.stats().requests_sent < 2 {
        now += 1_000;
        client.poll(now, &mut rng);
    }
    let resent_at = now;
    assert!(resent_at >= sent_at + 100_000, "{resent_at} {sent_at}");
    // (in the first send slot after it: slots come at 100/s, so within a
    // few mean gaps of 10 ms)
    assert!(resent_at <= sent_at + 150_000, "{resent_at} {sent_at}");
    // ...and the second attempt waits twice as long: nothing at +150 ms
    // (the first attempt's SURB is kept for twice its wait, so its reply
    // below still counts).
    while now < resent_at + 150_000 {
        now += 1_000;
        client.poll(now, &mut rng);
    }
    assert_eq!(client.stats().requests_sent, 2);
    assert_eq!(client.stats().retransmissions, 1);
    // The first attempt's reply arrives late: it answers the request.
    let replies = carry(&mut net, now, first, true);
    assert_eq!(replies.len(), 1);
    let (surb_id, payload) = &replies[0];
    match client.handle_reply(now + 10, *surb_id, payload) {
        Some(ClientEvent::Pong { seq, body, .. }) => {
            assert_eq!(seq, 9);
            assert!(body.starts_with(b"slow"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(client.stats().late_replies, 1);
    assert_eq!(client.outstanding(), 0);
    // Nothing is sent again once answered.
    let before = client.stats().requests_sent;
    for _ in 0..1_000 {
        now += 1_000;
        client.poll(now, &mut rng);
    }
    assert_eq!(client.stats().requests_sent, before);
}

#[test]
fn the_rtt_estimate_raises_the_timeout_of_a_slow_network() {
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let mut net = net(&mut rng);
    let mut client = client(&net, &mut rng);
    assert_eq!(client.retransmit_timeout(), 100_000);
    let mut now = 0;
    client.poll(now, &mut rng);
    for seq in 0..8 {
        client.request_echo(seq, vec![1]);
        let packet = loop {
            now += 1_000;
            let before = client.stats().requests_sent;
            let (packets, _) = client.poll(now, &mut rng);
            if client.stats().requests_sent > before {
                break packets.into_iter().next().unwrap();
            }
        };
        // Every echo takes 90 ms, just under the least timeout.
        now += 90_000;
        for (surb_id, payload) in carry(&mut net, now, packet, true) {
            client.handle_reply(now, surb_id, &payload);
        }
    }
    assert!(client.retransmit_timeout() > 100_000);
    assert_eq!(client.stats().retransmissions, 0);
}

#[test]
fn a_node_sheds_packets_that_waited_too_long_before_any_cryptography() {
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    let mut net = net_with(&mut rng, |config| config.max_wait_us = 50_000);
    let mut client = client(&net, &mut rng);
    client.poll(0, &mut rng);
    let mut packets = Vec::new();
    let mut now = 0;
    while packets.is_empty() {
        now += 1_000;
        packets = client.poll(now, &mut rng).0;
    }
    let gateway = &mut net.nodes[0].1;
    // Waited 60 ms in the driver's queues: dropped unopened.
    let out =
        gateway.handle_packet_received(1_060_000, 1_000_000, Source::Client(1), packets[0].clone());
    assert!(out.is_empty());
    assert_eq!(
        gateway.counters().dropped.get(&DropReason::Overloaded),
        Some(&1)
    );
    // The same packet after 10 ms: opened and scheduled, not shed.
    let out =
        gateway.handle_packet_received(1_010_000, 1_000_000, Source::Client(1), packets[0].clone());
    assert!(matches!(out.first(), Some(Output::PersistReplayTag { .. })));
    assert_eq!(
        gateway.counters().dropped.get(&DropReason::Overloaded),
        Some(&1)
    );
    assert_eq!(gateway.queue_depth(), 1);
}

#[test]
fn reply_queues_are_bounded_and_dropped_when_nobody_reads_them() {
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let mut net = net_with(&mut rng, |config| config.max_replies = 3);
    let mut client = client(&net, &mut rng);
    client.poll(0, &mut rng);
    let mut now = 0;
    let mut loops = Vec::new();
    while loops.len() < 5 {
        now += 1_000;
        loops.extend(client.poll(now, &mut rng).0);
    }
    // The replies are never taken: the gateway keeps three, drops the rest.
    let gateway_id = net.nodes[0].0;
    for packet in loops {
        carry(&mut net, now, packet, false);
    }
    let gateway = &mut net.nodes[0].1;
    assert_eq!(gateway_id, NodeId([1; 32]));
    assert_eq!(gateway.replies_held(), 3);
    assert_eq!(
        gateway.counters().dropped.get(&DropReason::ReplyQueueFull),
        Some(&2)
    );
    // Its client is gone: the three go too, counted.
    gateway.drop_replies(&RECIPIENT);
    assert_eq!(gateway.replies_held(), 0);
    assert_eq!(
        gateway.counters().dropped.get(&DropReason::ReplyQueueFull),
        Some(&5)
    );
}

#[test]
fn replies_nobody_comes_for_expire_from_the_gateway() {
    let mut rng = ChaCha20Rng::seed_from_u64(6);
    let mut net = net_with(&mut rng, |config| config.reply_ttl_us = 5_000_000);
    let mut client = client(&net, &mut rng);
    client.poll(0, &mut rng);
    let mut now = 0;
    let mut loops = Vec::new();
    while loops.len() < 2 {
        now += 1_000;
        loops.extend(client.poll(now, &mut rng).0);
    }
    for packet in loops {
        carry(&mut net, now, packet, false);
    }
    // `carry` hands them over a long wait later: queued then.
    let queued = now + 1_000_000_000;
    let gateway = &mut net.nodes[0].1;
    assert_eq!(gateway.replies_held(), 2);
    gateway.poll(queued + 4_900_000);
    assert_eq!(gateway.replies_held(), 2, "kept within the TTL");
    gateway.poll(queued + 6_000_000);
    assert_eq!(gateway.replies_held(), 0);
    assert_eq!(
        gateway.counters().dropped.get(&DropReason::ReplyExpired),
        Some(&2)
    );
    assert!(gateway.take_replies(&RECIPIENT).is_empty());
}
