//! The registry on a real anvil: its tree agrees with zerokit's, and every
//! branch of deposit, slash (commit, reveal), burn and withdrawal behaves,
//! refusals included.

use alloy::primitives::{Address, FixedBytes, U256};

use alloy::signers::local::PrivateKeySigner;
use funion_chain::anvil::Anvil;
use funion_chain::registry::{self, CreditRegistryEvents, Registry, RegistryParams};
use funion_tickets::{rate_commitment, Identity, RateTree, Scalar};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

const PER_TICKET: u64 = 1_000_000_000_000; // 10^12 wei
const MIN_POLICY: u64 = 5_000_000_000_000;
const DELAY_S: u64 = 3_600;
const VALIDITY_S: u64 = 600;

struct Chain {
    anvil: Anvil,
    address: Address,
    policy: PrivateKeySigner,
}

fn signer(seed: u8) -> PrivateKeySigner {
    PrivateKeySigner::from_bytes(&FixedBytes::from([seed; 32])).unwrap()
}

async fn chain() -> Chain {
    let anvil = Anvil::start(1, None).await.unwrap();
    let policy = signer(0x70);
    let params = RegistryParams {
        stake_per_ticket: U256::from(PER_TICKET),
        min_policy_stake: U256::from(MIN_POLICY),
        withdraw_delay_s: DELAY_S,
        root_validity_s: VALIDITY_S,
        policy: policy.address(),
    };
    let (address, _) = registry::deploy(&anvil.rpc_url, &params).await.unwrap();
    Chain {
        anvil,
        address,
        policy,
    }
}

impl Chain {
    async fn party(&self, seed: u8) -> Registry {
        let key = signer(seed);
        registry::fund(
            &self.anvil.rpc_url,
            key.address(),
            U256::from(10u64).pow(U256::from(18)),
        )
        .await
        .unwrap();
        Registry::new(&self.anvil.rpc_url, self.address, key).unwrap()
    }
}

fn identities(n: usize) -> Vec<Identity> {
    let mut rng = ChaCha20Rng::seed_from_u64(17);
    (0..n).map(|_| Identity::generate(&mut rng)).collect()
}

fn error_of<T: std::fmt::Debug>(result: anyhow::Result<T>) -> String {
    format!("{:#}", result.expect_err("should have been refused"))
}

/// What a receipt cost its sender, wei.
fn fee(receipt: &alloy::rpc::types::TransactionReceipt) -> U256 {
    U256::from(receipt.gas_used) * U256::from(receipt.effective_gas_price)
}

#[tokio::test]
async fn the_contracts_tree_is_zerokits_tree() {
    let chain = chain().await;
    let alice = chain.party(1).await;
    let mut tree = RateTree::default();
    assert_eq!(alice.root().await.unwrap(), tree.root(), "the empty root");
    let ids = identities(5);
    for (i, id) in ids.iter().enumerate() {
        let limit = 10 + i as u32;
        let receipt = alice
            .deposit(&id.commitment(), limit, U256::from(MIN_POLICY))
            .await
            .unwrap();
        let leaf = rate_commitment(&id.commitment(), limit).unwrap();
        tree.set(i as u32, &leaf).unwrap();
        assert_eq!(alice.root().await.unwrap(), tree.root(), "after leaf {i}");
        let block = receipt.block_number.unwrap();
        let events = alice.events(block, block).await.unwrap();
        let deposited = events
            .iter()
            .find_map(|e| match &e.event {
                CreditRegistryEvents::Deposited(d) => Some(d.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(
            funion_chain::to_scalar(deposited.rateCommitment),
            Some(leaf)
        );
        assert_eq!(deposited.index, i as u32);
        assert_eq!(
            deposited.doubleSpendStake,
            U256::from(PER_TICKET * u64::from(limit))
        );
    }
    // A leaf in the middle leaves: the roots still agree.
    alice.request_withdraw(&ids[2].commitment()).await.unwrap();
    tree.remove(2).unwrap();
    assert_eq!(alice.root().await.unwrap(), tree.root(), "after a removal");
    // One more after the hole.
    let extra = identities(6).pop().unwrap();
    alice
        .deposit(&extra.commitment(), 3, U256::from(MIN_POLICY))
        .await
        .unwrap();
    tree.set(5, &rate_commitment(&extra.commitment(), 3).unwrap())
        .unwrap();
    assert_eq!(alice.root().await.unwrap(), tree.root(), "after the hole");
    chain.anvil.stop().await;
}

#[tokio::test]
async fn deposits_must_be_paid_in_full_and_once() {
    let chain = chain().await;
    let alice = chain.party(1).await;
    let id = identities(1).pop().unwrap().commitment();
    let short = error_of(alice.deposit(&id, 10, U256::from(MIN_POLICY - 1)).await);
    assert!(short.contains("pay limit x stakePerTicket"), "{short}");
    let zero = error_of(alice.deposit(&id, 0, U256::from(MIN_POLICY)).await);
    assert!(zero.contains("limit must be positive"), "{zero}");
    let not_field = Scalar([0xff; 32]);
    let big = error_of(alice.deposit(&not_field, 1, U256::from(MIN_POLICY)).await);
    assert!(big.contains("not a field element"), "{big}");
    let before = alice.balance(alice.sender()).await.unwrap();
    let receipt = alice
        .deposit(&id, 10, U256::from(MIN_POLICY + 7))
        .await
        .unwrap();
    let paid = U256::from(10 * PER_TICKET + MIN_POLICY + 7);
    assert_eq!(
        alice.balance(alice.sender()).await.unwrap(),
        before - paid - fee(&receipt)
    );
    assert_eq!(alice.balance(chain.address).await.unwrap(), paid);
    let stake = alice.deposit_of(&id).await.unwrap().unwrap();
    assert_eq!(stake.owner, alice.sender());
    assert_eq!(stake.policy_stake, u128::from(MIN_POLICY + 7));
    let again = error_of(alice.deposit(&id, 10, U256::from(MIN_POLICY)).await);
    assert!(again.contains("already deposited"), "{again}");
    chain.anvil.stop().await;
}

#[tokio::test]
async fn slashing_takes_a_commitment_then_a_reveal_and_pays_the_revealer() {
    let chain = chain().await;
    let alice = chain.party(1).await;
    let bob = chain.party(2).await;
    let mallory = chain.party(3).await;
    let ids = identities(2);
    let id = &ids[0];
    let secret = Scalar(id.to_bytes());
    alice
        .deposit(&id.commitment(), 10, U256::from(MIN_POLICY))
        .await
        .unwrap();
    let root_before = alice.root().await.unwrap();

    // No commitment: refused (a front-runner copying the reveal has none).
    let bare = error_of(mallory.reveal_slash(&secret).await);
    assert!(bare.contains("no commitment"), "{bare}");
    // A wrong secret: committed and revealed, but no deposit has it.
    let wrong = Scalar(ids[1].to_bytes());
    bob.commit_slash(&wrong).await.unwrap();
    let none = error_of(bob.reveal_slash(&wrong).await);
    assert!(none.contains("no deposit has this secret"), "{none}");

    let before = bob.balance(bob.sender()).await.unwrap();
    let (commit, reveal) = bob.slash(&secret).await.unwrap();
    assert!(reveal.block_number > commit.block_number);
    let d = U256::from(10 * PER_TICKET);
    assert_eq!(
        bob.balance(bob.sender()).await.unwrap(),
        before + d - fee(&commit) - fee(&reveal),
        "the revealer's balance rose by D"
    );
    let block = reveal.block_number.unwrap();
    let slashed = bob
        .events(block, block)
        .await
        .unwrap()
        .into_iter()
        .find_map(|e| match e.event {
            CreditRegistryEvents::Slashed(s) => Some(s),
            _ => None,
        })
        .expect("a Slashed event");
    assert_eq!(slashed.revealer, bob.sender());
    assert_eq!(slashed.paid, d);
    assert_eq!(
        funion_chain::to_scalar(slashed.idCommitment),
        Some(id.commitment())
    );
    let stake = alice.deposit_of(&id.commitment()).await.unwrap().unwrap();
    assert!(stake.slashed);
    assert_ne!(alice.root().await.unwrap(), root_before, "the leaf left");
    assert_eq!(alice.root().await.unwrap(), RateTree::default().root());

    // A replayed reveal (its commitment is spent) and a second slash.
    let replay = error_of(bob.reveal_slash(&secret).await);
    assert!(replay.contains("no commitment"), "{replay}");
    let twice = error_of(bob.slash(&secret).await);
    assert!(twice.contains("already slashed"), "{twice}");
    chain.anvil.stop().await;
}

#[tokio::test]
async fn a_reveal_in_the_commitments_block_is_refused() {
    let chain = chain().await;
    let alice = chain.party(1).await;
    let bob = chain.party(2).await;
    let id = identities(1).pop().unwrap();
    alice
        .deposit(&id.commitment(), 10, U256::from(MIN_POLICY))
        .await
        .unwrap();
    let secret = Scalar(id.to_bytes());
    let (commit, reveal) = bob.commit_and_reveal_in_one_block(&secret).await.unwrap();
    assert!(commit.status(), "the commitment is mined");
    assert_eq!(commit.block_number, reveal.block_number);
    assert!(!reveal.status(), "the reveal in the same block reverts");
    assert!(
        !alice
            .deposit_of(&id.commitment())
            .await
            .unwrap()
            .unwrap()
            .slashed
    );
    // In a later block the same commitment works.
    bob.reveal_slash(&secret).await.unwrap();
    chain.anvil.stop().await;
}

#[tokio::test]
async fn burns_need_the_policy_key_and_pay_nobody() {
    let chain = chain().await;
    let alice = chain.party(1).await;
    let policy = {
        registry::fund(
            &chain.anvil.rpc_url,
            chain.policy.address(),
            U256::from(10u64).pow(U256::from(18)),
        )
        .await
        .unwrap();
        Registry::new(&chain.anvil.rpc_url, chain.address, chain.policy.clone()).unwrap()
    };
    let id = identities(1).pop().unwrap().commitment();
    alice
        .deposit(&id, 10, U256::from(MIN_POLICY))
        .await
        .unwrap();
    let evidence = FixedBytes::from([7u8; 32]);
    let wrong_key = error_of(alice.burn(&id, evidence).await);
    assert!(wrong_key.contains("only the policy address"), "{wrong_key}");
    let no_evidence = error_of(policy.burn(&id, FixedBytes::ZERO).await);
    assert!(no_evidence.contains("evidence hash"), "{no_evidence}");
    let policy_before = policy.balance(policy.sender()).await.unwrap();
    let receipt = policy.burn(&id, evidence).await.unwrap();
    assert_eq!(policy.burned().await.unwrap(), U256::from(MIN_POLICY));
    assert_eq!(
        policy.balance(policy.sender()).await.unwrap(),
        policy_before - fee(&receipt),
        "the policy key gained nothing"
    );
    let block = receipt.block_number.unwrap();
    let burned = policy
        .events(block, block)
        .await
        .unwrap()
        .into_iter()
        .find_map(|e| match e.event {
            CreditRegistryEvents::PolicyBurned(b) => Some(b),
            _ => None,
        })
        .unwrap();
    assert_eq!(burned.evidenceHash, evidence);
    let twice = error_of(policy.burn(&id, evidence).await);
    assert!(twice.contains("already burned"), "{twice}");
    // The withdrawal pays D only.
    alice.request_withdraw(&id).await.unwrap();
    alice.advance_time(DELAY_S).await.unwrap();
    let before = alice.balance(alice.sender()).await.unwrap();
    let claim = alice.claim(&id).await.unwrap();
    assert_eq!(
        alice.balance(alice.sender()).await.unwrap(),
        before + U256::from(10 * PER_TICKET) - fee(&claim)
    );
    assert_eq!(
        alice.balance(chain.address).await.unwrap(),
        U256::from(MIN_POLICY),
        "the burned stake stays locked in the registry"
    );
    chain.anvil.stop().await;
}

#[tokio::test]
async fn withdrawals_wait_out_the_delay_and_can_still_be_slashed() {
    let chain = chain().await;
    let alice = chain.party(1).await;
    let bob = chain.party(2).await;
    let ids = identities(2);
    let (a, b) = (&ids[0], &ids[1]);
    for id in [a, b] {
        alice
            .deposit(&id.commitment(), 10, U256::from(MIN_POLICY))
            .await
            .unwrap();
    }
    let not_owner = error_of(bob.request_withdraw(&a.commitment()).await);
    assert!(not_owner.contains("only the owner"), "{not_owner}");
    let no_request = error_of(alice.claim(&a.commitment()).await);
    assert!(
        no_request.contains("request a withdrawal first"),
        "{no_request}"
    );
    let root = alice.root().await.unwrap();
    alice.request_withdraw(&a.commitment()).await.unwrap();
    assert_ne!(alice.root().await.unwrap(), root, "the leaf left at once");
    assert!(
        alice.is_known_root(&root).await.unwrap(),
        "the old root lives on"
    );
    let twice = error_of(alice.request_withdraw(&a.commitment()).await);
    assert!(twice.contains("already withdrawing"), "{twice}");
    let early = error_of(alice.claim(&a.commitment()).await);
    assert!(early.contains("delay is not over"), "{early}");
    // Slashing during the delay: D to the revealer, S back to the owner.
    bob.slash(&Scalar(a.to_bytes())).await.unwrap();
    alice.advance_time(DELAY_S).await.unwrap();
    assert!(
        !alice.is_known_root(&root).await.unwrap(),
        "a root replaced more than rootValidity ago is dead"
    );
    let by_other = error_of(bob.claim(&a.commitment()).await);
    assert!(by_other.contains("only the owner"), "{by_other}");
    let before = alice.balance(alice.sender()).await.unwrap();
    let claim = alice.claim(&a.commitment()).await.unwrap();
    assert_eq!(
        alice.balance(alice.sender()).await.unwrap(),
        before + U256::from(MIN_POLICY) - fee(&claim)
    );
    let closed = error_of(alice.claim(&a.commitment()).await);
    assert!(closed.contains("request a withdrawal first"), "{closed}");
    // A whole withdrawal pays D + S.
    alice.request_withdraw(&b.commitment()).await.unwrap();
    alice.advance_time(DELAY_S).await.unwrap();
    let before = alice.balance(alice.sender()).await.unwrap();
    let claim = alice.claim(&b.commitment()).await.unwrap();
    assert_eq!(
        alice.balance(alice.sender()).await.unwrap(),
        before + U256::from(10 * PER_TICKET + MIN_POLICY) - fee(&claim)
    );
    let after_close = error_of(bob.slash(&Scalar(b.to_bytes())).await);
    assert!(after_close.contains("withdrawn"), "{after_close}");
    chain.anvil.stop().await;
}
