//! Documents and descriptors: signed, verified, refused when bad or stale;
//! several authorities voting on one document, which needs a threshold of
//! their endorsements.

use ed25519_dalek::SigningKey;
use funion_pki::{
    ClassTiming, EpochKey, Error, KemKind, ModelEntry, ModelTask, NetworkDocument, NodeDescriptor,
    NodeEntry, Parameters, Role, Trust, Vote, Voting, MAX_MODELS, MAX_MODEL_NAME,
};
use funion_sphinx::kem::{Kem, X25519};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

fn node(seed: u8, role: Role, layer: u8, epoch: u64) -> (SigningKey, NodeEntry) {
    let identity = SigningKey::from_bytes(&[seed; 32]);
    let mut rng = ChaCha20Rng::seed_from_u64(seed as u64);
    let sphinx_keys = [epoch, epoch + 1]
        .into_iter()
        .map(|e| EpochKey {
            epoch: e,
            public_key: X25519::public_key_bytes(&X25519::generate(&mut rng).1),
        })
        .collect();
    let entry = NodeEntry {
        name: format!("node{seed}"),
        role,
        layer,
        identity_key: identity.verifying_key().to_bytes(),
        link_key: [seed; 32],
        addresses: vec![format!("127.0.0.1:{}", 4000 + seed as u16)],
        sphinx_keys,
        models: Vec::new(),
        fast_path: false,
    };
    (identity, entry)
}

fn parameters() -> Parameters {
    Parameters {
        kem: KemKind::X25519,
        ..Parameters::fast()
    }
}

fn network(epoch: u64) -> Vec<NodeEntry> {
    let mut nodes = vec![
        node(1, Role::Gateway, 0, epoch).1,
        node(2, Role::Service, 0, epoch).1,
    ];
    for layer in 1..=3u8 {
        nodes.push(node(10 + layer, Role::Mix, layer, epoch).1);
    }
    nodes
}

#[test]
fn a_signed_document_verifies_and_round_trips() {
    let authority = SigningKey::from_bytes(&[99; 32]);
    let document = NetworkDocument::new(7, parameters(), network(7)).unwrap();
    let bytes = document.sign(&authority).unwrap();
    assert_eq!(
        bytes,
        document.sign(&authority).unwrap(),
        "canonical: same bytes every time"
    );
    let key = Trust::single(authority.verifying_key().to_bytes()).unwrap();
    assert_eq!(NetworkDocument::verify(&bytes, &key, 7).unwrap(), document);
    assert_eq!(
        NetworkDocument::verify(&bytes, &key, 6).unwrap(),
        document,
        "next epoch's, published early"
    );
    let gateway = document.with_role(Role::Gateway).next().unwrap();
    assert_eq!(document.node(&gateway.id()).unwrap(), gateway);
    assert_eq!(document.layer(2).count(), 1);
}

#[test]
fn bad_documents_are_refused_with_a_reason() {
    let authority = SigningKey::from_bytes(&[99; 32]);
    let key = Trust::single(authority.verifying_key().to_bytes()).unwrap();
    let bytes = NetworkDocument::new(7, parameters(), network(7))
        .unwrap()
        .sign(&authority)
        .unwrap();
    assert_eq!(
        NetworkDocument::verify(&bytes, &key, 8).unwrap_err(),
        Error::Stale {
            document: 7,
            current: 8
        }
    );
    assert_eq!(
        NetworkDocument::verify(&bytes, &key, 5).unwrap_err(),
        Error::FromTheFuture {
            document: 7,
            current: 5
        }
    );
    let other =
        Trust::single(SigningKey::from_bytes(&[98; 32]).verifying_key().to_bytes()).unwrap();
    assert_eq!(
        NetworkDocument::verify(&bytes, &other, 7).unwrap_err(),
        Error::TooFewEndorsements {
            valid: 0,
            needed: 1
        }
    );
    for at in [0, bytes.len() / 2, bytes.len() - 1] {
        let mut flipped = bytes.clone();
        flipped[at] ^= 1;
        assert!(
            NetworkDocument::verify(&flipped, &key, 7).is_err(),
            "flip at {at}"
        );
    }
    assert!(matches!(
        NetworkDocument::verify(&bytes[..10], &key, 7),
        Err(Error::Malformed(_))
    ));
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(
        NetworkDocument::verify(&longer, &key, 7),
        Err(Error::Malformed(_))
    ));

    let mut missing_layer = network(7);
    missing_layer.retain(|n| n.layer != 2);
    assert!(matches!(
        NetworkDocument::new(7, parameters(), missing_layer),
        Err(Error::Invalid(_))
    ));
    let mut twice = network(7);
    twice.push(twice[0].clone());
    assert!(matches!(
        NetworkDocument::new(7, parameters(), twice),
        Err(Error::Invalid(_))
    ));
    let mut wrong_kem = parameters();
    wrong_kem.kem = KemKind::XWing;
    assert!(matches!(
        NetworkDocument::new(7, wrong_kem, network(7)),
        Err(Error::Invalid(_))
    ));
    assert!(matches!(
        NetworkDocument::new(9, parameters(), network(7)),
        Err(Error::Invalid(_))
    ));
}

#[test]
fn descriptors_are_signed_by_their_own_node() {
    let (identity, entry) = node(5, Role::Mix, 1, 3);
    let descriptor = NodeDescriptor {
        epoch: 3,
        node: entry,
    };
    let bytes = descriptor.sign(&identity).unwrap();
    assert_eq!(NodeDescriptor::verify(&bytes).unwrap(), descriptor);
    let mut forged = bytes.clone();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    assert_eq!(
        NodeDescriptor::verify(&forged).unwrap_err(),
        Error::BadSignature
    );
    assert!(descriptor.sign(&SigningKey::from_bytes(&[6; 32])).is_err());
}

fn model(name: &str) -> ModelEntry {
    ModelEntry {
        name: name.into(),
        task: ModelTask::Generate,
        tokenizer_digest: Some([1; 32]),
        template_digest: None,
        context: 8_192,
        dimensions: 0,
        timings: vec![
            ClassTiming {
                input_class: 256,
                prefill_us: 1_000,
                per_token_us: 10,
            },
            ClassTiming {
                input_class: 1024,
                prefill_us: 4_000,
                per_token_us: 12,
            },
        ],
        batch_wait_ms: 0,
    }
}

#[test]
fn service_nodes_publish_their_models_and_nobody_else_does() {
    let authority = SigningKey::from_bytes(&[99; 32]);
    let key = Trust::single(authority.verifying_key().to_bytes()).unwrap();
    let mut nodes = network(7);
    let service = nodes.iter_mut().find(|n| n.role == Role::Service).unwrap();
    service.models = vec![model("smollm2"), model("minilm")];
    let document = NetworkDocument::new(7, parameters(), nodes.clone()).unwrap();
    let bytes = document.sign(&authority).unwrap();
    let back = NetworkDocument::verify(&bytes, &key, 7).unwrap();
    let listed = back.with_role(Role::Service).next().unwrap();
    assert_eq!(listed.models[0], model("smollm2"));

    // The published speed: the smallest listed class that holds the input.
    let m = model("smollm2");
    assert_eq!(m.compute_us(100, 16), Some(1_000 + 16 * 10));
    assert_eq!(m.compute_us(512, 16), Some(4_000 + 16 * 12));
    assert_eq!(
        m.compute_us(4096, 0),
        Some(4_000),
        "past the last: the last"
    );
    assert_eq!(
        ModelEntry {
            timings: Vec::new(),
            ..m
        }
        .compute_us(256, 1),
        None
    );

    let refused = |nodes: Vec<NodeEntry>| {
        assert!(matches!(
            NetworkDocument::new(7, parameters(), nodes),
            Err(Error::Invalid(_))
        ))
    };
    let mut on_a_mix = network(7);
    on_a_mix
        .iter_mut()
        .find(|n| n.role == Role::Mix)
        .unwrap()
        .models = vec![model("smollm2")];
    refused(on_a_mix);
    for bad in [
        vec![model("twice"), model("twice")],
        vec![model("")],
        vec![model(&"x".repeat(MAX_MODEL_NAME + 1))],
        vec![model("new\nline")],
        vec![ModelEntry {
            context: 0,
            ..model("no-context")
        }],
        (0..=MAX_MODELS).map(|i| model(&format!("m{i}"))).collect(),
    ] {
        let mut nodes = network(7);
        nodes
            .iter_mut()
            .find(|n| n.role == Role::Service)
            .unwrap()
            .models = bad;
        refused(nodes);
    }
}

fn authorities() -> (Vec<SigningKey>, Trust) {
    let keys: Vec<SigningKey> = (0..3)
        .map(|i| SigningKey::from_bytes(&[70 + i; 32]))
        .collect();
    let trust = Trust::new(
        keys.iter().map(|k| k.verifying_key().to_bytes()).collect(),
        None,
    )
    .unwrap();
    (keys, trust)
}

#[test]
fn a_threshold_is_a_majority_or_more() {
    let (keys, trust) = authorities();
    assert_eq!(trust.threshold(), 2);
    let public: Vec<[u8; 32]> = keys.iter().map(|k| k.verifying_key().to_bytes()).collect();
    assert!(
        Trust::new(public.clone(), Some(1)).is_err(),
        "1 of 3 is no majority"
    );
    assert!(Trust::new(public.clone(), Some(4)).is_err());
    assert!(Trust::new(public.clone(), Some(3)).is_ok());
    assert!(
        Trust::new(vec![public[0], public[0]], None).is_err(),
        "a key twice"
    );
    assert!(Trust::new(Vec::new(), None).is_err());
}

#[test]
fn a_document_with_too_few_valid_endorsements_is_refused() {
    let (keys, trust) = authorities();
    let document = NetworkDocument::new(7, parameters(), network(7)).unwrap();
    let endorse = |k: &SigningKey| document.endorse(k).unwrap();
    let two = document
        .seal(&[endorse(&keys[0]), endorse(&keys[2])])
        .unwrap();
    assert_eq!(NetworkDocument::verify(&two, &trust, 7).unwrap(), document);

    let one = document.seal(&[endorse(&keys[1])]).unwrap();
    assert_eq!(
        NetworkDocument::verify(&one, &trust, 7).unwrap_err(),
        Error::TooFewEndorsements {
            valid: 1,
            needed: 2
        }
    );
    // An outsider's endorsement counts for nothing.
    let outsider = SigningKey::from_bytes(&[5; 32]);
    let with_outsider = document
        .seal(&[endorse(&keys[1]), endorse(&outsider)])
        .unwrap();
    assert_eq!(
        NetworkDocument::verify(&with_outsider, &trust, 7).unwrap_err(),
        Error::TooFewEndorsements {
            valid: 1,
            needed: 2
        }
    );
    // Nor does a trusted key's name on a signature it did not make.
    let mut forged = endorse(&keys[1]);
    forged.authority = keys[0].verifying_key().to_bytes();
    let with_forged = document.seal(&[endorse(&keys[1]), forged]).unwrap();
    assert_eq!(
        NetworkDocument::verify(&with_forged, &trust, 7).unwrap_err(),
        Error::TooFewEndorsements {
            valid: 1,
            needed: 2
        }
    );
    // Nor does an endorsement of another document.
    let other = NetworkDocument::new(7, parameters(), network(7)[1..].to_vec()).unwrap();
    let mixed = document
        .seal(&[endorse(&keys[1]), other.endorse(&keys[0]).unwrap()])
        .unwrap();
    assert_eq!(
        NetworkDocument::verify(&mixed, &trust, 7).unwrap_err(),
        Error::TooFewEndorsements {
            valid: 1,
            needed: 2
        }
    );
}

/// Feeds every machine every other machine's vote, then every
/// endorsement, as the authorities' shells do over HTTP.
fn exchange(machines: &mut [Voting], past_deadline: bool) {
    let votes: Vec<Vec<u8>> = machines.iter().map(|m| m.own_vote().to_vec()).collect();
    for machine in machines.iter_mut() {
        for vote in &votes {
            machine.handle_vote(vote).unwrap();
        }
        machine.handle_timeout(past_deadline).unwrap();
    }
    let endorsements: Vec<_> = machines
        .iter()
        .filter_map(|m| m.own_endorsement().cloned())
        .collect();
    for machine in machines.iter_mut() {
        for endorsement in &endorsements {
            machine.handle_endorsement(endorsement.clone()).unwrap();
        }
        machine.handle_timeout(past_deadline).unwrap();
    }
}

#[test]
fn three_authorities_agree_on_the_nodes_a_majority_saw() {
    let (keys, trust) = authorities();
    let nodes = network(7);
    let only_one_saw = node(40, Role::Mix, 1, 7).1;
    let two_saw = node(41, Role::Mix, 2, 7).1;
    let views = [
        [nodes.clone(), vec![only_one_saw.clone(), two_saw.clone()]].concat(),
        [nodes.clone(), vec![two_saw.clone()]].concat(),
        nodes.clone(),
    ];
    let mut machines: Vec<Voting> = keys
        .iter()
        .zip(views)
        .map(|(key, view)| Voting::new(key.clone(), trust.clone(), 7, parameters(), view).unwrap())
        .collect();
    assert!(
        machines[0].sealed().is_none(),
        "alone it waits for the others"
    );
    exchange(&mut machines, false);
    let sealed: Vec<Vec<u8>> = machines
        .iter()
        .map(|m| m.sealed().unwrap().to_vec())
        .collect();
    assert!(
        sealed.iter().all(|s| *s == sealed[0]),
        "the same bytes at every authority"
    );
    let document = NetworkDocument::verify(&sealed[0], &trust, 7).unwrap();
    assert!(
        document.node(&two_saw.id()).is_some(),
        "two of three saw it"
    );
    assert!(
        document.node(&only_one_saw.id()).is_none(),
        "one of three is no majority"
    );
    assert_eq!(document.nodes.len(), nodes.len() + 1);
}

#[test]
fn past_the_deadline_two_of_three_authorities_publish_without_the_third() {
    let (keys, trust) = authorities();
    let mut machines: Vec<Voting> = keys[..2]
        .iter()
        .map(|key| Voting::new(key.clone(), trust.clone(), 7, parameters(), network(7)).unwrap())
        .collect();
    exchange(&mut machines, false);
    assert!(
        machines[0].sealed().is_none(),
        "waits for the third before the deadline"
    );
    assert_eq!(
        machines[0].missing_votes(),
        vec![trust
            .keys()
            .iter()
            .copied()
            .find(|k| *k == keys[2].verifying_key().to_bytes())
            .unwrap()]
    );
    exchange(&mut machines, true);
    let sealed = machines[0].sealed().unwrap();
    assert_eq!(sealed, machines[1].sealed().unwrap());
    NetworkDocument::verify(sealed, &trust, 7).unwrap();
    // A lone authority past the deadline has no threshold of votes.
    let mut alone =
        Voting::new(keys[2].clone(), trust.clone(), 7, parameters(), network(7)).unwrap();
    alone.handle_timeout(true).unwrap();
    assert!(alone.consensus().is_none() && alone.sealed().is_none());
}

#[test]
fn bad_votes_and_endorsements_are_refused_with_a_reason() {
    let (keys, trust) = authorities();
    let mut voting =
        Voting::new(keys[0].clone(), trust.clone(), 7, parameters(), network(7)).unwrap();
    let outsider = SigningKey::from_bytes(&[5; 32]);
    let untrusted = Vote::sign(&outsider, 7, &parameters(), network(7)).unwrap();
    assert!(voting
        .handle_vote(&untrusted)
        .unwrap_err()
        .to_string()
        .contains("not a trusted authority"));
    let other_epoch = Vote::sign(&keys[1], 8, &parameters(), network(8)).unwrap();
    assert!(voting
        .handle_vote(&other_epoch)
        .unwrap_err()
        .to_string()
        .contains("epoch 8"));
    let other_parameters = Parameters {
        mean_delay_us: 1,
        ..parameters()
    };
    let differing = Vote::sign(&keys[1], 7, &other_parameters, network(7)).unwrap();
    assert!(voting
        .handle_vote(&differing)
        .unwrap_err()
        .to_string()
        .contains("other parameters"));
    let mut flipped = Vote::sign(&keys[1], 7, &parameters(), network(7)).unwrap();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    assert_eq!(
        voting.handle_vote(&flipped).unwrap_err(),
        Error::BadSignature
    );
    // One vote, then another from the same authority: equivocation.
    voting
        .handle_vote(&Vote::sign(&keys[1], 7, &parameters(), network(7)).unwrap())
        .unwrap();
    let second = Vote::sign(&keys[1], 7, &parameters(), network(7)[1..].to_vec()).unwrap();
    assert!(voting
        .handle_vote(&second)
        .unwrap_err()
        .to_string()
        .contains("two different votes"));
    // An endorsement before the consensus, and one of another document.
    let document = NetworkDocument::new(7, parameters(), network(7)).unwrap();
    assert!(voting
        .handle_endorsement(document.endorse(&keys[1]).unwrap())
        .is_err());
    voting.handle_timeout(true).unwrap();
    assert!(voting.consensus().is_some());
    let mut nodes = network(7);
    nodes.push(node(42, Role::Mix, 3, 7).1);
    let another = NetworkDocument::new(7, parameters(), nodes).unwrap();
    assert!(voting
        .handle_endorsement(another.endorse(&keys[1]).unwrap())
        .unwrap_err()
        .to_string()
        .contains("not of this consensus"));
    voting
        .handle_endorsement(document.endorse(&keys[1]).unwrap())
        .unwrap();
    voting.handle_timeout(true).unwrap();
    NetworkDocument::verify(voting.sealed().unwrap(), &trust, 7).unwrap();
}
