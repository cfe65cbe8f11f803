//! Real RLN proofs through every branch a courier and a ledger rely on.

use funion_tickets::{
    commitment_of_secret, judge, rate_commitment, Identity, MerklePath, Prover, RateTree, Scalar,
    Scope, Ticket, TicketError, TicketRequest, Verdict, Verifier, TICKET_LEN,
};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

struct Depositor {
    identity: Identity,
    limit: u32,
    path: MerklePath,
    root: Scalar,
}

/// A tree with a few deposits; the depositor under test sits at leaf 3.
fn depositor(seed: u64) -> Depositor {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut tree = RateTree::default();
    for index in 0..5 {
        let other = Identity::generate(&mut rng);
        tree.set(index, &rate_commitment(&other.commitment(), 10).unwrap())
            .unwrap();
    }
    let identity = Identity::generate(&mut rng);
    let limit = 4;
    tree.set(3, &rate_commitment(&identity.commitment(), limit).unwrap())
        .unwrap();
    Depositor {
        path: tree.path(3).unwrap(),
        root: tree.root(),
        identity,
        limit,
    }
}

fn scope() -> Scope {
    Scope {
        period: 7,
        provider: "acme".into(),
    }
}

fn request<'a>(
    d: &'a Depositor,
    scope: &'a Scope,
    message_id: u32,
    nonce: u8,
) -> TicketRequest<'a> {
    TicketRequest {
        identity: &d.identity,
        limit: d.limit,
        path: &d.path,
        scope,
        message_id,
        nonce: [nonce; 32],
    }
}

#[test]
fn identities_round_trip_and_reject_non_canonical_secrets() {
    let identity = Identity::generate(&mut ChaCha20Rng::seed_from_u64(1));
    let again = Identity::from_bytes(&identity.to_bytes()).unwrap();
    assert_eq!(again.commitment(), identity.commitment());
    assert_eq!(
        commitment_of_secret(&identity.to_bytes()).unwrap(),
        identity.commitment()
    );
    assert!(matches!(
        Identity::from_bytes(&[0xff; 32]),
        Err(TicketError::NotCanonical(_))
    ));
    assert!(Identity::from_bytes(&[1; 31]).is_err());
    assert!(format!("{identity:?}").contains("commitment"));
}

#[test]
fn a_ticket_verifies_and_every_wrong_input_is_refused() {
    let d = depositor(2);
    let scope = scope();
    let prover = Prover::default();
    let ticket = prover.prove(&request(&d, &scope, 0, 1)).unwrap();
    let bytes = ticket.encode();
    assert_eq!(bytes.len(), TICKET_LEN);
    let ticket = Ticket::decode(&bytes).unwrap();
    assert_eq!(ticket.root, d.root);

    let verifier = Verifier::new("acme");
    let spend = verifier.verify(&ticket, &[7], &[d.root]).unwrap();
    assert_eq!(spend, ticket.spend());

    // Not a recent root, not an accepted period, another provider.
    assert_eq!(
        verifier.verify(&ticket, &[7], &[Scalar::default()]),
        Err(TicketError::UnknownRoot)
    );
    assert!(matches!(
        verifier.verify(&ticket, &[8, 9], &[d.root]),
        Err(TicketError::WrongPeriod { period: 7, .. })
    ));
    assert_eq!(
        Verifier::new("other").verify(&ticket, &[7], &[d.root]),
        Err(TicketError::InvalidProof)
    );
    // A share, a signal or a nullifier changed after proving.
    for field in 0..3 {
        let mut forged = ticket.clone();
        let target = match field {
            0 => &mut forged.y,
            1 => &mut forged.x,
            _ => &mut forged.nullifier,
        };
        target.0[0] ^= 1;
        assert_eq!(
            verifier.verify(&forged, &[7], &[d.root]),
            Err(TicketError::InvalidProof),
            "field {field}"
        );
    }
    // Garbage where the proof's points should be.
    let mut forged = ticket.clone();
    forged.proof = [0x5a; 128];
    assert!(verifier.verify(&forged, &[7], &[d.root]).is_err());
    // A field element that is not canonical.
    let mut forged = ticket.clone();
    forged.y = Scalar([0xff; 32]);
    assert_eq!(
        verifier.verify(&forged, &[7], &[d.root]),
        Err(TicketError::NotCanonical("y"))
    );
    assert!(Ticket::decode(&bytes[..TICKET_LEN - 1]).is_err());

    // A message id at the limit cannot be proved.
    assert!(matches!(
        prover.prove(&request(&d, &scope, d.limit, 1)),
        Err(TicketError::Prove(_))
    ));
}

#[test]
fn a_partial_proof_finishes_into_tickets_that_verify() {
    let d = depositor(3);
    let scope = scope();
    let prover = Prover::default();
    let partial = prover.partial(&d.identity, d.limit, &d.path).unwrap();
    let verifier = Verifier::new("acme");
    let mut nullifiers = Vec::new();
    for message_id in 0..2 {
        let ticket = prover
            .finish(
                &partial,
                &request(&d, &scope, message_id, 10 + message_id as u8),
            )
            .unwrap();
        verifier.verify(&ticket, &[7], &[d.root]).unwrap();
        nullifiers.push(ticket.nullifier);
    }
    // One nullifier per message id, whatever the nonce or the way of proving.
    assert_ne!(nullifiers[0], nullifiers[1]);
    let full = prover.prove(&request(&d, &scope, 1, 99)).unwrap();
    assert_eq!(full.nullifier, nullifiers[1]);
}

#[test]
fn the_same_ticket_twice_is_a_replay_two_tickets_for_one_id_give_the_secret_away() {
    let d = depositor(4);
    let scope = scope();
    let prover = Prover::default();
    let first = prover.prove(&request(&d, &scope, 2, 1)).unwrap();
    let second = prover.prove(&request(&d, &scope, 2, 2)).unwrap();
    assert_eq!(first.nullifier, second.nullifier);
    assert_eq!(judge(&first.spend(), &first.spend()), Verdict::Replay);
    let Verdict::DoubleSpend { secret } = judge(&first.spend(), &second.spend()) else {
        panic!("two tickets for one message id must give the secret away");
    };
    assert_eq!(secret, d.identity.to_bytes());
    // What the ledger checks before it slashes: the secret opens the leaf.
    let commitment = commitment_of_secret(&secret).unwrap();
    assert_eq!(commitment, d.identity.commitment());
    assert_eq!(
        rate_commitment(&commitment, d.limit).unwrap(),
        rate_commitment(&d.identity.commitment(), d.limit).unwrap()
    );
    // Another period is another nullifier: no double spend across periods.
    let later = Scope {
        period: 8,
        ..scope.clone()
    };
    let third = prover.prove(&request(&d, &later, 2, 3)).unwrap();
    assert_ne!(third.nullifier, first.nullifier);
}

#[test]
fn the_tree_removes_leaves_and_paths_are_checked() {
    let mut tree = RateTree::default();
    let empty = tree.root();
    let leaf = rate_commitment(&Scalar::default(), 1).unwrap();
    tree.set(0, &leaf).unwrap();
    let full = tree.root();
    assert_ne!(full, empty);
    tree.remove(0).unwrap();
    assert_eq!(tree.root(), empty);
    assert!(tree.set(1 << 20, &leaf).is_err());
    let mut path = tree.path(0).unwrap();
    path.bits[0] = 2;
    let d = depositor(5);
    let scope = scope();
    let bad = TicketRequest {
        path: &path,
        ..request(&d, &scope, 0, 0)
    };
    assert!(Prover::default().prove(&bad).is_err());
}

#[test]
fn an_unproved_ticket_carries_the_proved_ones_values_and_is_refused() {
    let d = depositor(5);
    let scope = scope();
    let prover = Prover::default();
    let proved = prover.prove(&request(&d, &scope, 1, 42)).unwrap();
    let unproved = request(&d, &scope, 1, 42).unproved().unwrap();
    assert_eq!(
        (unproved.period, unproved.root, unproved.nullifier),
        (proved.period, proved.root, proved.nullifier)
    );
    assert_eq!((unproved.x, unproved.y), (proved.x, proved.y));
    assert_ne!(unproved.proof, proved.proof);
    assert!(Verifier::new("acme")
        .verify(&unproved, &[7], &[d.root])
        .is_err());
    assert!(request(&d, &scope, d.limit, 1).unproved().is_err());
}
