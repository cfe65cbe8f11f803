//! The authority over HTTP: it admits only the nodes on its allowlist,
//! freezes an epoch's document once every admitted node is in, and never
//! changes it after that.

use funion_net::config::{AuthorityFile, AuthorityRef, NodeFile, NodeKeys, SecretSeed};
use funion_net::directory::{publish, Frozen};
use funion_net::{fetch_document, http_client, unix_ms, Authorities};
use funion_pki::{epoch_at, KemKind, NetworkDocument, Parameters, Role};
use funion_sphinx::kem::X25519;
use tokio::net::TcpListener;

fn node(name: &str, role: Role, layer: u8, seed: u8, authorities: &[AuthorityRef]) -> NodeFile {
    NodeFile {
        name: name.into(),
        role,
        layer,
        listen: format!("127.0.0.1:{}", 20_000 + u16::from(seed)),
        metrics_listen: None,
        secret_seed: SecretSeed::from(hex::encode([seed; 32])),
        data_dir: std::env::temp_dir(),
        authorities: authorities.to_vec(),
        authority_threshold: None,
        box_lifetime_s: 3_600,
        courier_hold_ms: 1_000,
        compute: None,
    }
}

fn keys(config: &NodeFile) -> NodeKeys {
    NodeKeys::from_config(&config.secret_seed).unwrap()
}

/// A network of one node per role (and one per mix layer) and `count`
/// directory authorities that admit them all, of which the first
/// `running` are started, with day-long epochs (no test crosses a
/// boundary), the given boot grace and a 300 ms vote window: the nodes,
/// the authorities as the nodes know them, and the parameters.
async fn network(
    boot_grace_ms: u64,
    count: usize,
    running: usize,
) -> (Vec<NodeFile>, Authorities, Parameters) {
    let parameters = Parameters {
        epoch_ms: 24 * 3_600_000,
        grace_ms: 60_000,
        kem: KemKind::X25519,
        ..Parameters::fast()
    };
    let mut listeners = Vec::new();
    let mut refs = Vec::new();
    let mut seeds = Vec::new();
    for k in 0..count {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let seed = hex::encode([200 + k as u8; 32]);
        refs.push(AuthorityRef {
            url: format!("http://{}", listener.local_addr().unwrap()),
            key: funion_authority::public_key_hex(&seed).unwrap(),
        });
        listeners.push(listener);
        seeds.push(seed);
    }
    let mut nodes = vec![node("gateway", Role::Gateway, 0, 1, &refs)];
    for layer in 1..=parameters.layers {
        nodes.push(node(
            &format!("mix{layer}"),
            Role::Mix,
            layer,
            1 + layer,
            &refs,
        ));
    }
    nodes.push(node("service", Role::Service, 0, 10, &refs));
    nodes.push(node("replica", Role::Replica, 0, 11, &refs));
    for (listener, seed) in listeners.into_iter().zip(seeds).take(running) {
        let config = AuthorityFile {
            listen: String::new(),
            secret_seed: seed.into(),
            allowed_nodes: nodes.iter().map(|n| keys(n).identity_hex()).collect(),
            boot_grace_ms,
            authorities: refs.clone(),
            authority_threshold: None,
            vote_window_ms: 300,
            parameters: parameters.clone(),
        };
        tokio::spawn(funion_authority::serve(config, listener));
    }
    let authorities = Authorities::new(&refs, None).unwrap();
    (nodes, authorities, parameters)
}

/// Fetches the document of `epoch` until one is served (up to 10 s).
async fn document_when_served(
    http: &reqwest::Client,
    authorities: &Authorities,
    epoch: u64,
) -> anyhow::Result<NetworkDocument> {
    let mut last = None;
    for _ in 0..1_000 {
        match fetch_document(http, authorities, epoch, false).await {
            Ok(document) => return Ok(document),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    Err(last.unwrap())
}

#[tokio::test]
async fn only_listed_nodes_join_and_a_frozen_document_never_changes() {
    // A grace far longer than the test: the document freezes only because
    // every admitted node is in.
    let (nodes, authorities, parameters) = network(3_600_000, 3, 3).await;
    let stranger = node("stranger", Role::Mix, 1, 99, &nodes[0].authorities);
    let http = http_client().unwrap();
    let epoch = epoch_at(unix_ms(), parameters.epoch_ms);

    // A node not on the list is refused, with the reason.
    let error = publish::<X25519>(&http, &stranger, &keys(&stranger), epoch, &[])
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("not on the operator's allowlist"),
        "{error:#}"
    );

    // With all but one in, the document is not served yet: it waits for
    // the last admitted node (or its cutoff).
    for n in &nodes[..nodes.len() - 1] {
        publish::<X25519>(&http, n, &keys(n), epoch, &[])
            .await
            .unwrap();
    }
    let waiting = fetch_document(&http, &authorities, epoch, false)
        .await
        .unwrap_err();
    assert!(
        waiting.to_string().contains("waiting for 1 of"),
        "{waiting:#}"
    );

    // The last one in: frozen, and every fetch gets the same document.
    let last = nodes.last().unwrap();
    publish::<X25519>(&http, last, &keys(last), epoch, &[])
        .await
        .unwrap();
    let first = document_when_served(&http, &authorities, epoch)
        .await
        .unwrap();
    assert_eq!(first.nodes.len(), nodes.len());
    assert!(!first.nodes.iter().any(|n| n.name == "stranger"));

    // A changed descriptor for the frozen epoch is refused as frozen; the
    // same descriptor again is taken (a restarted node); the document
    // does not move.
    let mut moved = nodes[1].clone();
    moved.listen = "127.0.0.1:1".into();
    let error = publish::<X25519>(&http, &moved, &keys(&moved), epoch, &[])
        .await
        .unwrap_err();
    assert!(error.is::<Frozen>(), "{error:#}");
    publish::<X25519>(&http, &nodes[1], &keys(&nodes[1]), epoch, &[])
        .await
        .unwrap();
    let again = fetch_document(&http, &authorities, epoch, false)
        .await
        .unwrap();
    assert_eq!(again, first);
    // The changed node goes into the next epoch's document instead.
    publish::<X25519>(&http, &moved, &keys(&moved), epoch + 1, &[])
        .await
        .unwrap();
}

#[tokio::test]
async fn past_the_boot_grace_a_late_node_is_told_the_first_open_epoch() {
    // A short grace, and the cutoff of the day's document long past: the
    // document freezes without the last node once the grace is over.
    let (nodes, authorities, parameters) = network(300, 1, 1).await;
    let http = http_client().unwrap();
    let epoch = epoch_at(unix_ms(), parameters.epoch_ms);
    for n in &nodes[..nodes.len() - 1] {
        publish::<X25519>(&http, n, &keys(n), epoch, &[])
            .await
            .unwrap();
    }
    let document = document_when_served(&http, &authorities, epoch).await;
    let document = document.expect("the document froze once the grace was over");
    assert_eq!(document.nodes.len(), nodes.len() - 1);

    // The late node is refused for this epoch, and told which epoch's
    // document is the first it can still join: the next one, unless that
    // one's cutoff (half an epoch before it) has passed too.
    let late = nodes.last().unwrap();
    let before = unix_ms();
    let error = publish::<X25519>(&http, late, &keys(late), epoch, &[])
        .await
        .unwrap_err();
    let after = unix_ms();
    assert!(error.is::<Frozen>(), "{error:#}");
    let said = error.to_string();
    let open: u64 = said
        .rsplit("first still open is epoch ")
        .next()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no open epoch named: {said}"));
    let cutoff = funion_pki::document_cutoff_ms(epoch + 1, parameters.epoch_ms);
    let expected: Vec<u64> = [before, after]
        .iter()
        .map(|&t| if t < cutoff { epoch + 1 } else { epoch + 2 })
        .collect();
    assert!(expected.contains(&open), "{said}");
    if open == epoch + 1 {
        publish::<X25519>(&http, late, &keys(late), epoch + 1, &[])
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn three_authorities_serve_one_document_and_two_of_them_suffice() {
    // Three authorities in the configs, the third never up: a descriptor
    // reaches two (a threshold), the two wait out the vote window for the
    // third, then each serves the document both endorsed.
    let (nodes, authorities, parameters) = network(3_600_000, 3, 2).await;
    let http = http_client().unwrap();
    let epoch = epoch_at(unix_ms(), parameters.epoch_ms);
    for n in &nodes {
        publish::<X25519>(&http, n, &keys(n), epoch, &[])
            .await
            .unwrap();
    }
    let document = document_when_served(&http, &authorities, epoch)
        .await
        .unwrap();
    assert_eq!(document.nodes.len(), nodes.len());
    // Each of the two serves it, the same document.
    let refs = &nodes[0].authorities;
    for alone in &refs[..2] {
        let one = Authorities::new(std::slice::from_ref(alone), None).unwrap();
        let bytes = http
            .get(format!("{}/document/{epoch}", alone.url))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(
            NetworkDocument::verify(&bytes, authorities.trust(), epoch).unwrap(),
            document
        );
        // Trusting that authority alone, its own endorsement suffices.
        assert!(NetworkDocument::verify(&bytes, one.trust(), epoch).is_ok());
    }
    // A client that wants all three endorsements refuses it, with the
    // reason: two are valid, three needed.
    let strict = Authorities::new(refs, Some(3)).unwrap();
    let error = fetch_document(&http, &strict, epoch, false)
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("2 valid endorsements from trusted authorities; 3 are needed"),
        "{error:#}"
    );
}
