//! Documents and descriptors: signed, verified, refused when bad or stale.

use ed25519_dalek::SigningKey;
use funion_pki::{
    ClassTiming, EpochKey, Error, KemKind, ModelEntry, ModelTask, NetworkDocument, NodeDescriptor,
    NodeEntry, Parameters, Role, MAX_MODELS, MAX_MODEL_NAME,
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
    let key = authority.verifying_key().to_bytes();
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
    let key = authority.verifying_key().to_bytes();
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
    let other = SigningKey::from_bytes(&[98; 32]).verifying_key().to_bytes();
    assert_eq!(
        NetworkDocument::verify(&bytes, &other, 7).unwrap_err(),
        Error::BadSignature
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
    let key = authority.verifying_key().to_bytes();
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
