//! The authority over HTTP: it admits only the nodes on its allowlist,
//! freezes an epoch's document once every admitted node is in, and never
//! changes it after that.

use funion_net::config::{AuthorityFile, NodeFile, NodeKeys, SecretSeed};
use funion_net::directory::{publish, Frozen};
use funion_net::{fetch_document, http_client, unix_ms};
use funion_pki::{epoch_at, KemKind, Parameters, Role};
use funion_sphinx::kem::X25519;
use tokio::net::TcpListener;

fn node(name: &str, role: Role, layer: u8, seed: u8, authority_url: &str) -> NodeFile {
    NodeFile {
        name: name.into(),
        role,
        layer,
        listen: format!("127.0.0.1:{}", 20_000 + u16::from(seed)),
        metrics_listen: None,
        secret_seed: SecretSeed::from(hex::encode([seed; 32])),
        data_dir: std::env::temp_dir(),
        authority_url: authority_url.into(),
        authority_key: String::new(),
        box_lifetime_s: 3_600,
        courier_hold_ms: 1_000,
        compute: None,
    }
}

fn keys(config: &NodeFile) -> NodeKeys {
    NodeKeys::from_config(&config.secret_seed).unwrap()
}

/// A network of one node per role (and one per mix layer) and a running
/// authority that admits them all, with day-long epochs (no test crosses
/// a boundary) and the given boot grace: the nodes, the authority's URL
/// and key, and the parameters.
async fn network(boot_grace_ms: u64) -> (Vec<NodeFile>, String, [u8; 32], Parameters) {
    let parameters = Parameters {
        epoch_ms: 24 * 3_600_000,
        grace_ms: 60_000,
        kem: KemKind::X25519,
        ..Parameters::fast()
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seed = hex::encode([200u8; 32]);
    let authority_key: [u8; 32] = hex::decode(funion_authority::public_key_hex(&seed).unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let mut nodes = vec![node("gateway", Role::Gateway, 0, 1, &url)];
    for layer in 1..=parameters.layers {
        nodes.push(node(
            &format!("mix{layer}"),
            Role::Mix,
            layer,
            1 + layer,
            &url,
        ));
    }
    nodes.push(node("service", Role::Service, 0, 10, &url));
    nodes.push(node("replica", Role::Replica, 0, 11, &url));
    let config = AuthorityFile {
        listen: String::new(),
        secret_seed: seed.into(),
        allowed_nodes: nodes.iter().map(|n| keys(n).identity_hex()).collect(),
        boot_grace_ms,
        parameters: parameters.clone(),
    };
    tokio::spawn(funion_authority::serve(config, listener));
    (nodes, url, authority_key, parameters)
}

#[tokio::test]
async fn only_listed_nodes_join_and_a_frozen_document_never_changes() {
    // A grace far longer than the test: the document freezes only because
    // every admitted node is in.
    let (nodes, url, authority_key, parameters) = network(3_600_000).await;
    let stranger = node("stranger", Role::Mix, 1, 99, &url);
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
    let waiting = fetch_document(&http, &url, &authority_key, epoch, false)
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
    let first = fetch_document(&http, &url, &authority_key, epoch, false)
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
    let again = fetch_document(&http, &url, &authority_key, epoch, false)
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
    let (nodes, url, authority_key, parameters) = network(300).await;
    let http = http_client().unwrap();
    let epoch = epoch_at(unix_ms(), parameters.epoch_ms);
    for n in &nodes[..nodes.len() - 1] {
        publish::<X25519>(&http, n, &keys(n), epoch, &[])
            .await
            .unwrap();
    }
    let mut document = None;
    for _ in 0..500 {
        match fetch_document(&http, &url, &authority_key, epoch, false).await {
            Ok(d) => {
                document = Some(d);
                break;
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
        }
    }
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
