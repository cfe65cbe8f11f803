//! The ledger's rules without a store or a network: stakes, slashing,
//! burns, the withdrawal and its delayed claim, and which roots live.

use funion_credits::ledger::{
    burn, check_signature, live_roots, open_deposit, slash, withdraw, DepositRequest, DepositState,
    LedgerRefusal, RefusalKind, StakeRules, WITHDRAW_LABEL,
};
use funion_tickets::Scalar;

const RULES: StakeRules = StakeRules {
    stake_per_ticket: 10,
    min_policy_stake: 50,
    withdraw_delay_s: 100,
};

fn owner() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[7; 32])
}

fn request(limit: u32, d: u128, s: u128) -> DepositRequest {
    DepositRequest {
        id_commitment: Scalar([1; 32]),
        limit,
        double_spend_stake: d,
        policy_stake: s,
        owner_key: hex::encode(owner().verifying_key().to_bytes()),
    }
}

fn kind<T>(result: Result<T, LedgerRefusal>) -> RefusalKind {
    result.map(drop).unwrap_err().kind
}

#[test]
fn deposits_stake_enough_and_each_change_follows_its_state() {
    assert_eq!(
        kind(open_deposit(&RULES, &request(0, 0, 50), false, 0, 1)),
        RefusalKind::Invalid
    );
    assert_eq!(
        kind(open_deposit(&RULES, &request(4, 39, 50), false, 0, 1)),
        RefusalKind::Invalid
    );
    assert_eq!(
        kind(open_deposit(&RULES, &request(4, 40, 49), false, 0, 1)),
        RefusalKind::Invalid
    );
    let mut bad_owner = request(4, 40, 50);
    bad_owner.owner_key = "zz".into();
    assert_eq!(
        kind(open_deposit(&RULES, &bad_owner, false, 0, 1)),
        RefusalKind::Invalid
    );
    assert_eq!(
        kind(open_deposit(&RULES, &request(4, 40, 50), true, 0, 1)),
        RefusalKind::Conflict
    );
    assert_eq!(
        kind(open_deposit(&RULES, &request(4, 40, 50), false, 1 << 20, 1)),
        RefusalKind::Full
    );
    let deposit = open_deposit(&RULES, &request(4, 40, 50), false, 3, 1).unwrap();
    assert_eq!(
        (deposit.index, deposit.state.clone()),
        (3, DepositState::Active)
    );

    // A burn takes S once; a slash pays D once, and nothing after it.
    let (burned, record) = burn(&deposit, "evidence", 5).unwrap();
    assert_eq!(record.amount, 50);
    assert_eq!(kind(burn(&burned, "again", 6)), RefusalKind::Conflict);
    assert_eq!(kind(burn(&deposit, "", 6)), RefusalKind::Invalid);
    let (slashed, paid) = slash(&burned, "provider:acme").unwrap();
    assert_eq!(paid, 40);
    assert_eq!(
        kind(slash(&slashed, "provider:acme")),
        RefusalKind::Conflict
    );
    assert_eq!(
        kind(withdraw(&RULES, &slashed, false, 7)),
        RefusalKind::Conflict
    );

    // A withdrawal waits its delay; the claim pays what was not burned.
    let (leaving, none) = withdraw(&RULES, &deposit, false, 10).unwrap();
    assert_eq!(none, None);
    assert_eq!(
        kind(withdraw(&RULES, &leaving, true, 109)),
        RefusalKind::Conflict
    );
    let (gone, payout) = withdraw(&RULES, &leaving, true, 110).unwrap();
    assert_eq!(gone.state, DepositState::Withdrawn);
    let account = format!("owner:{}", deposit.owner_key);
    assert_eq!(payout, Some((account.clone(), 90)));
    let (burned_leaving, _) = withdraw(&RULES, &burned, false, 10).unwrap();
    assert_eq!(
        withdraw(&RULES, &burned_leaving, true, 200).unwrap().1,
        Some((account, 40))
    );
    // Slashing still works while a withdrawal waits.
    assert!(slash(&leaving, "provider:acme").is_ok());
}

#[test]
fn signatures_are_checked_and_old_roots_die_after_their_validity() {
    use ed25519_dalek::Signer;
    let key = hex::encode(owner().verifying_key().to_bytes());
    let message = [WITHDRAW_LABEL, &[1; 32]].concat();
    let signature = hex::encode(owner().sign(&message).to_bytes());
    assert!(check_signature(&key, &message, &signature).is_ok());
    let wrong = check_signature(&key, b"another message", &signature).unwrap_err();
    assert_eq!(wrong.kind, RefusalKind::Forbidden);
    assert!(check_signature("00", &message, &signature).is_err());

    let (a, b, c) = (Scalar([1; 32]), Scalar([2; 32]), Scalar([3; 32]));
    let history = [(a, 0), (b, 100), (c, 200)];
    // a was replaced at 100, so it lives until 160; b until 260.
    assert_eq!(live_roots(&history, 150, 60), vec![a, b, c]);
    assert_eq!(live_roots(&history, 160, 60), vec![b, c]);
    assert_eq!(live_roots(&history, 259, 60), vec![b, c]);
    assert_eq!(live_roots(&history, 260, 60), vec![c]);
    assert_eq!(live_roots(&[], 0, 60), Vec::<Scalar>::new());
}
