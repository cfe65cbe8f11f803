//! A slash the ledger acknowledged is carried out on the chain even when
//! its first attempts fail and the ledger restarts in between: the secret
//! waits in the ledger's store until the chain shows the deposit slashed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use funion_chain::anvil::Anvil;
use funion_chain::registry::{self, CreditRegistryEvents};
use funion_chain::{keys, Registry, RegistryParams, U256};
use funion_ledger::{ChainSettings, DepositState, LedgerClient, LedgerFile};
use funion_tickets::Identity;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use tokio::runtime::Runtime;

const PER_TICKET: u64 = 1_000_000_000_000;
const MIN_POLICY: u64 = 5_000_000_000_000;
const LIMIT: u32 = 2;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("funion-ledger-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A ledger on a runtime of its own, so that shutting the runtime down
/// stops every task of it, as a crash would.
fn start_ledger(config: LedgerFile) -> (LedgerClient, Runtime) {
    let runtime = Runtime::new().unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    runtime.spawn(async move {
        if let Err(e) = funion_ledger::serve(config, listener).await {
            eprintln!("ledger stopped: {e:#}");
        }
    });
    (LedgerClient::new(&url).unwrap(), runtime)
}

fn ledger_config(dir: &Path, rpc_url: &str, registry: &str) -> LedgerFile {
    LedgerFile {
        listen: "127.0.0.1:0".into(),
        store: dir.join("ledger.redb"),
        policy_key: "11".repeat(32),
        withdraw_delay_s: 3_600,
        stake_per_ticket: PER_TICKET,
        min_policy_stake: MIN_POLICY,
        root_history: 8,
        root_validity_s: 600,
        chain: Some(ChainSettings {
            rpc_url: rpc_url.into(),
            registry: registry.into(),
            confirmations: 1,
            from_block: 0,
            poll_ms: 50,
            slasher_key: dir.join("slasher.key"),
        }),
        unbacked_deposits: false,
    }
}

/// Polls `ready` every 50 ms, at most 60 s of them.
async fn until<F: std::future::Future<Output = bool>>(what: &str, mut ready: impl FnMut() -> F) {
    for _ in 0..1_200 {
        if ready().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} did not happen");
}

#[test]
fn a_queued_slash_survives_failed_attempts_and_a_restart() {
    let driver = Runtime::new().unwrap();
    let dir = scratch("slash");
    let ether = U256::from(10u64).pow(U256::from(18));
    let (anvil, registry) = driver.block_on(async {
        let anvil = Anvil::start(1, None).await.unwrap();
        let policy = keys::load_or_create(&dir.join("policy.key")).unwrap();
        let params = RegistryParams {
            stake_per_ticket: U256::from(PER_TICKET),
            min_policy_stake: U256::from(MIN_POLICY),
            withdraw_delay_s: 3_600,
            root_validity_s: 600,
            policy: policy.address(),
        };
        let (address, _) = registry::deploy(&anvil.rpc_url, &params).await.unwrap();
        let depositor = keys::load_or_create(&dir.join("depositor.key")).unwrap();
        registry::fund(&anvil.rpc_url, depositor.address(), ether)
            .await
            .unwrap();
        let registry = Registry::new(&anvil.rpc_url, address, depositor).unwrap();
        (anvil, registry)
    });
    let identity = Identity::generate(&mut ChaCha20Rng::seed_from_u64(7));
    let id = identity.commitment();
    driver
        .block_on(registry.deposit(&id, LIMIT, U256::from(MIN_POLICY)))
        .unwrap();
    // The slasher key has no ether yet: every reveal fails for gas.
    let slasher = keys::load_or_create(&dir.join("slasher.key"))
        .unwrap()
        .address();
    let config = ledger_config(&dir, &anvil.rpc_url, &format!("{:#x}", registry.address()));

    let (ledger, first) = start_ledger(config.clone());
    driver.block_on(until("indexing the deposit", || async {
        ledger.status(&id).await.is_ok()
    }));
    let queued = driver
        .block_on(ledger.slash(identity.to_bytes(), "anyone"))
        .unwrap();
    assert_eq!(queued.paid, u128::from(LIMIT) * u128::from(PER_TICKET));
    first.shutdown_timeout(Duration::from_secs(10));
    let on_chain = driver.block_on(registry.deposit_of(&id)).unwrap().unwrap();
    assert!(!on_chain.slashed, "an unfunded key cannot have slashed");

    // Funded, and restarted on the same store: nobody asks it again.
    driver
        .block_on(registry::fund(&anvil.rpc_url, slasher, ether))
        .unwrap();
    let (ledger, second) = start_ledger(config);
    driver.block_on(until("the slash on the chain", || async {
        registry
            .deposit_of(&id)
            .await
            .unwrap()
            .is_some_and(|d| d.slashed)
    }));
    let claimant = format!("{slasher:#x}");
    driver.block_on(until("the ledger indexing the slash", || async {
        ledger.status(&id).await.unwrap().state
            == DepositState::Slashed {
                claimant: claimant.clone(),
            }
    }));
    let head = driver.block_on(registry.head()).unwrap();
    let events = driver.block_on(registry.events(0, head)).unwrap();
    let slashes: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.event {
            CreditRegistryEvents::Slashed(s) => Some(s.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(slashes.len(), 1, "exactly one slash");
    assert_eq!(slashes[0].revealer, slasher);
    assert_eq!(slashes[0].paid, U256::from(queued.paid));
    second.shutdown_timeout(Duration::from_secs(10));
    driver.block_on(anvil.stop());
}
