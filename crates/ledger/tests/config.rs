//! The ledger refuses configs that would make deposits free or point it at
//! nothing, with an error that says why.

use std::path::PathBuf;

use funion_chain::anvil::Anvil;
use funion_ledger::{ChainSettings, LedgerFile};
use tokio::net::TcpListener;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("funion-ledger-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn config(dir: &std::path::Path, chain: Option<ChainSettings>, unbacked: bool) -> LedgerFile {
    LedgerFile {
        listen: "127.0.0.1:0".into(),
        store: dir.join("ledger.redb"),
        policy_key: "11".repeat(32),
        withdraw_delay_s: 60,
        stake_per_ticket: 10,
        min_policy_stake: 100,
        root_history: 8,
        root_validity_s: 60,
        chain,
        unbacked_deposits: unbacked,
    }
}

fn settings(rpc_url: &str, dir: &std::path::Path) -> ChainSettings {
    let slasher_key = dir.join("slasher.key");
    funion_chain::keys::load_or_create(&slasher_key).unwrap();
    ChainSettings {
        rpc_url: rpc_url.into(),
        // A well-formed address with nothing deployed at it.
        registry: "0x5FbDB2315678afecb367f032d93F642f64180aa3".into(),
        confirmations: 1,
        from_block: 0,
        poll_ms: 50,
        slasher_key,
    }
}

async fn refusal(config: LedgerFile) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    funion_ledger::serve(config, listener)
        .await
        .expect_err("the ledger must refuse this config")
        .to_string()
}

#[tokio::test]
async fn a_ledger_without_a_chain_or_with_both_modes_is_refused() {
    let dir = scratch("modes");
    let neither = refusal(config(&dir, None, false)).await;
    assert!(neither.contains("has no [chain]"), "{neither}");
    let both = refusal(config(
        &dir,
        Some(settings("http://127.0.0.1:1", &dir)),
        true,
    ))
    .await;
    assert!(both.contains("takes no unbacked deposits"), "{both}");
}

#[tokio::test]
async fn a_registry_address_without_a_contract_is_refused() {
    let dir = scratch("no-contract");
    let anvil = Anvil::start(1, None).await.unwrap();
    let empty = refusal(config(&dir, Some(settings(&anvil.rpc_url, &dir)), false)).await;
    assert!(
        empty.contains("no contract at the registry address"),
        "{empty}"
    );
    anvil.stop().await;
}
