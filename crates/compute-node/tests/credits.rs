//! The ledger over HTTP with its redb store, the compute couriers' ticket
//! check with a shared nullifier keeper, and the wallet, with real RLN
//! proofs: deposits, slashing, policy burns, delayed withdrawals, replays,
//! double spends across two couriers, a courier that crashes between
//! recording nullifiers and running the job, and a wallet that crashes
//! between reserving message ids and proving them.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use ed25519_dalek::{Signer, SigningKey};
use funion_client::wallet::{drop_stale_tickets, top_up, Wallet};
use funion_compute::{Dispatch, Sampling, Task};
use funion_compute_node::gate::TicketGate;
use funion_ledger::{
    BurnRequest, DepositRequest, DepositState, LedgerClient, LedgerFile, BURN_LABEL,
};
use funion_net::config::NullifierFile;
use funion_pki::Credits;
use funion_tickets::{Identity, Prover, Scalar, Scope, Ticket, TicketRequest};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use tokio::net::TcpListener;

fn temp(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("credits-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const POLICY_SEED: [u8; 32] = [7; 32];

/// Starts a ledger on loopback over the store in `dir`.
async fn start_ledger(dir: &Path, withdraw_delay_s: u64) -> (String, tokio::task::JoinHandle<()>) {
    start_ledger_with(dir, withdraw_delay_s, 3600).await
}

async fn start_ledger_with(
    dir: &Path,
    withdraw_delay_s: u64,
    root_validity_s: u64,
) -> (String, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let config = LedgerFile {
        listen: listener.local_addr().unwrap().to_string(),
        store: dir.join("ledger.redb"),
        policy_key: hex::encode(
            SigningKey::from_bytes(&POLICY_SEED)
                .verifying_key()
                .to_bytes(),
        ),
        withdraw_delay_s,
        stake_per_ticket: 10,
        min_policy_stake: 100,
        root_history: 8,
        root_validity_s,
        // The gate's rules, against a ledger that takes deposits over
        // HTTP; the chain's ledger is tested in crates/funion/tests.
        chain: None,
        unbacked_deposits: true,
    };
    let task = tokio::spawn(async move {
        funion_ledger::serve(config, listener).await.unwrap();
    });
    (url, task)
}

fn credits(ledger_url: &str) -> Credits {
    Credits {
        ledger_url: ledger_url.to_string(),
        provider: "acme".into(),
        ..Credits::default()
    }
}

fn owner() -> SigningKey {
    SigningKey::from_bytes(&[9; 32])
}

fn deposit_request(identity: &Identity, limit: u32) -> DepositRequest {
    DepositRequest {
        id_commitment: identity.commitment(),
        limit,
        double_spend_stake: 10 * u128::from(limit),
        policy_stake: 100,
        owner_key: hex::encode(owner().verifying_key().to_bytes()),
    }
}

/// A dispatch for cell (256, 256) whose output cap is `job`'s.
fn dispatch(job: u8, tickets: Vec<Vec<u8>>) -> Dispatch {
    Dispatch {
        read_cap_in: vec![1; 136],
        ctx_in: vec![2; 16],
        input: None,
        write_cap_out: vec![job; 168],
        ctx_out: vec![3; 16],
        model: "m".into(),
        task: Task::Embed,
        input_class: 256,
        output_class: 256,
        sampling: Sampling::default(),
        bucket: 10,
        bucket_from_input: false,
        tickets,
    }
}

fn now_s() -> u64 {
    funion_net::unix_ms() / 1000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_takes_deposits_slashes_burns_and_delays_withdrawals() {
    let dir = temp("ledger");
    let (url, task) = start_ledger(&dir, 0).await;
    let ledger = LedgerClient::new(&url).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(11);
    let alice = Identity::generate(&mut rng);
    let bob = Identity::generate(&mut rng);
    let empty_root = ledger.roots().await.unwrap().pop().unwrap();

    // Deposits: checked, one per identity, each a new leaf and a new root.
    let low = DepositRequest {
        double_spend_stake: 5,
        ..deposit_request(&alice, 10)
    };
    let refused = ledger.deposit(&low).await.unwrap_err().to_string();
    assert!(
        refused.contains("double-spend stake of at least 100"),
        "{refused}"
    );
    let a = ledger.deposit(&deposit_request(&alice, 10)).await.unwrap();
    let b = ledger.deposit(&deposit_request(&bob, 10)).await.unwrap();
    assert_eq!((a.index, b.index), (0, 1));
    let again = ledger.deposit(&deposit_request(&alice, 10)).await;
    assert!(again.unwrap_err().to_string().contains("already deposited"));
    let roots = ledger.roots().await.unwrap();
    assert_eq!(roots, vec![empty_root, a.root, b.root]);
    let path = ledger.path(a.index).await.unwrap();
    assert_eq!(path.root, b.root);

    // Bad input gets a clear error, and the ledger keeps serving.
    let http = reqwest::Client::new();
    let answer = http
        .post(format!("{url}/deposit"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 400);
    assert!(answer.text().await.unwrap().contains("bad JSON"));
    let answer = http.get(format!("{url}/deposit/zz")).send().await.unwrap();
    assert_eq!(answer.status(), 400);

    // Slashing: a secret that opens no leaf is refused; Alice's pays her
    // stake D to the claimant and empties her leaf.
    let stranger = Identity::generate(&mut rng);
    let refused = ledger
        .slash(stranger.to_bytes(), "carol")
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("no such deposit"));
    let slashed = ledger.slash(alice.to_bytes(), "carol").await.unwrap();
    assert_eq!(
        (slashed.id_commitment, slashed.paid),
        (alice.commitment(), 100)
    );
    assert_eq!(ledger.balance("carol").await.unwrap(), 100);
    assert!(ledger.slash(alice.to_bytes(), "carol").await.is_err());
    let root_without_alice = ledger.roots().await.unwrap().pop().unwrap();
    assert_ne!(root_without_alice, b.root);

    // A policy burn needs the policy key; S goes to nobody and is listed.
    let evidence = "sha256:0badc0de".to_string();
    let message = [BURN_LABEL, &bob.commitment().0, evidence.as_bytes()].concat();
    let forged = BurnRequest {
        id_commitment: bob.commitment(),
        evidence_hash: evidence.clone(),
        signature: hex::encode(owner().sign(&message).to_bytes()),
    };
    assert!(ledger
        .burn(&forged)
        .await
        .unwrap_err()
        .to_string()
        .contains("does not verify"));
    let burn = BurnRequest {
        signature: hex::encode(
            SigningKey::from_bytes(&POLICY_SEED)
                .sign(&message)
                .to_bytes(),
        ),
        ..forged
    };
    let burned = ledger.burn(&burn).await.unwrap();
    assert_eq!(burned.amount, 100);
    assert_eq!(ledger.burns().await.unwrap(), vec![burned]);
    assert!(ledger.burn(&burn).await.is_err(), "burned once only");

    // Withdrawal: signed by the owner key, the leaf leaves at once, the
    // stakes (less the burned S) only after the delay (0 s here).
    let sign = |id: &Scalar, key: &SigningKey| funion_ledger::WithdrawRequest {
        id_commitment: *id,
        signature: hex::encode(
            key.sign(&[funion_ledger::WITHDRAW_LABEL, &id.0].concat())
                .to_bytes(),
        ),
    };
    let wrong = sign(&bob.commitment(), &SigningKey::from_bytes(&[1; 32]));
    assert!(ledger.withdraw(&wrong, false).await.is_err());
    let request = sign(&bob.commitment(), &owner());
    assert!(
        ledger.withdraw(&request, true).await.is_err(),
        "claim before request"
    );
    let pending = ledger.withdraw(&request, false).await.unwrap();
    assert!(matches!(pending.state, DepositState::Withdrawing { .. }));
    let done = ledger.withdraw(&request, true).await.unwrap();
    assert_eq!(done.state, DepositState::Withdrawn);
    let owner_account = format!("owner:{}", hex::encode(owner().verifying_key().to_bytes()));
    assert_eq!(ledger.balance(&owner_account).await.unwrap(), 100);
    assert_eq!(ledger.roots().await.unwrap().pop().unwrap(), empty_root);

    // Everything was on disk: a restarted ledger has the same state.
    task.abort();
    let _ = task.await;
    // Its open connections hold the store until the clients hang up.
    drop((ledger, http));
    for _ in 0..500 {
        if redb::Database::create(dir.join("ledger.redb")).is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let (url, task) = start_ledger(&dir, 0).await;
    let ledger = LedgerClient::new(&url).unwrap();
    assert_eq!(ledger.roots().await.unwrap().pop().unwrap(), empty_root);
    assert_eq!(ledger.balance("carol").await.unwrap(), 100);
    assert_eq!(ledger.burns().await.unwrap().len(), 1);
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawal_waits_out_its_delay() {
    let dir = temp("delay");
    let (url, task) = start_ledger(&dir, 3600).await;
    let ledger = LedgerClient::new(&url).unwrap();
    let alice = Identity::generate(&mut ChaCha20Rng::seed_from_u64(12));
    ledger.deposit(&deposit_request(&alice, 10)).await.unwrap();
    let id = alice.commitment();
    let request = funion_ledger::WithdrawRequest {
        id_commitment: id,
        signature: hex::encode(
            owner()
                .sign(&[funion_ledger::WITHDRAW_LABEL, &id.0].concat())
                .to_bytes(),
        ),
    };
    ledger.withdraw(&request, false).await.unwrap();
    let early = ledger
        .withdraw(&request, true)
        .await
        .unwrap_err()
        .to_string();
    assert!(early.contains("can be claimed in"), "{early}");
    // Slashing still reaches a deposit on its way out.
    ledger.slash(alice.to_bytes(), "carol").await.unwrap();
    task.abort();
}

struct Book {
    identity: Identity,
    limit: u32,
    path: funion_tickets::MerklePath,
}

impl Book {
    fn ticket(&self, message_id: u32, nonce: u8, period: u64) -> Vec<u8> {
        Prover::default()
            .prove(&TicketRequest {
                identity: &self.identity,
                limit: self.limit,
                path: &self.path,
                scope: &Scope {
                    period,
                    provider: "acme".into(),
                },
                message_id,
                nonce: [nonce; 32],
            })
            .unwrap()
            .encode()
    }
}

async fn depositor(ledger: &LedgerClient, seed: u64) -> Book {
    let identity = Identity::generate(&mut ChaCha20Rng::seed_from_u64(seed));
    let limit = 10;
    let deposited = ledger
        .deposit(&deposit_request(&identity, limit))
        .await
        .unwrap();
    let path = ledger.path(deposited.index).await.unwrap().path;
    Book {
        identity,
        limit,
        path,
    }
}

/// A ledger, one deposit, and credits at `price` tickets a job.
struct Priced {
    dir: PathBuf,
    task: tokio::task::JoinHandle<()>,
    ledger: LedgerClient,
    credits: Credits,
    period: u64,
    book: Book,
}

async fn priced(name: &str, price: u32, seed: u64) -> Priced {
    let dir = temp(name);
    let (url, task) = start_ledger(&dir, 3600).await;
    let ledger = LedgerClient::new(&url).unwrap();
    let mut credits = credits(&url);
    credits.prices = Credits::flat_prices(price);
    let period = credits.period_at(now_s());
    let book = depositor(&ledger, seed).await;
    Priced {
        dir,
        task,
        ledger,
        credits,
        period,
        book,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_couriers_share_one_nullifier_set() {
    let Priced {
        dir,
        task,
        ledger,
        credits,
        period,
        book,
    } = priced("gate", 2, 13).await;

    // Courier A keeps the set and serves it; courier B records through it.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let a = TicketGate::new(
        credits.clone(),
        &NullifierFile {
            listen: Some(port.to_string()),
            url: None,
        },
        &dir.join("a"),
    )
    .await
    .unwrap();
    let b = TicketGate::new(
        credits.clone(),
        &NullifierFile {
            listen: None,
            url: Some(format!("http://{port}")),
        },
        &dir.join("b"),
    )
    .await
    .unwrap();

    let (t0, t1) = (book.ticket(0, 1, period), book.ticket(1, 2, period));
    let job = dispatch(1, vec![t0.clone(), t1.clone()]);
    a.admit(&job, now_s()).await.unwrap();
    // The same job sent again (its echo was late) is the same job.
    a.admit(&job, now_s()).await.unwrap();
    // Its tickets in another job, at the other courier: a replay.
    let replay = b
        .admit(&dispatch(2, vec![t0.clone(), t1.clone()]), now_s())
        .await;
    assert!(replay.unwrap_err().contains("replay"));

    // The price is exact, tickets must verify, roots must be the ledger's.
    let t2 = book.ticket(2, 3, period);
    let short = b
        .admit(&dispatch(3, vec![t2.clone()]), now_s())
        .await
        .unwrap_err();
    assert!(
        short.contains("costs 2 tickets, the job carries 1"),
        "{short}"
    );
    let mut forged = Ticket::decode(&t2).unwrap();
    forged.y.0[0] ^= 1;
    let invalid = b
        .admit(&dispatch(3, vec![t2.clone(), forged.encode()]), now_s())
        .await
        .unwrap_err();
    assert!(invalid.contains("proof is invalid"), "{invalid}");
    let garbage = b
        .admit(&dispatch(3, vec![t2.clone(), vec![0; 10]]), now_s())
        .await;
    assert!(garbage.unwrap_err().contains("malformed ticket"));
    let old = book.ticket(3, 4, period - 5);
    let stale = b
        .admit(&dispatch(3, vec![t2.clone(), old]), now_s())
        .await
        .unwrap_err();
    assert!(stale.contains("credit period"), "{stale}");
    // Nothing of a refused job was recorded: t2 is still good.
    let t3 = book.ticket(3, 5, period);
    b.admit(&dispatch(4, vec![t2, t3]), now_s()).await.unwrap();

    // Another ticket for message id 0 (a cheating client) at courier B:
    // the keeper has A's share, the two give the secret away, the deposit
    // is slashed and the provider paid D.
    let cheat = book.ticket(0, 99, period);
    let t4 = book.ticket(4, 6, period);
    let caught = b
        .admit(&dispatch(5, vec![t4, cheat]), now_s())
        .await
        .unwrap_err();
    assert!(caught.contains("double-spends"), "{caught}");
    let deposit = ledger.status(&book.identity.commitment()).await.unwrap();
    assert_eq!(
        deposit.state,
        DepositState::Slashed {
            claimant: "provider:acme".into()
        }
    );
    assert_eq!(ledger.balance("provider:acme").await.unwrap(), 100);
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(b.counters.double_spends.load(Relaxed), 1);
    assert_eq!(b.counters.slashed.load(Relaxed), 1);
    assert_eq!(b.counters.replays.load(Relaxed), 1);
    // Two tickets of one job for one message id are caught as well.
    let twin = dispatch(
        6,
        vec![book.ticket(5, 7, period), book.ticket(5, 8, period)],
    );
    assert!(a
        .admit(&twin, now_s())
        .await
        .unwrap_err()
        .contains("double-spends"));
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_courier_that_crashes_after_recording_never_accepts_a_ticket_twice() {
    let Priced {
        dir,
        task,
        credits,
        period,
        book,
        ..
    } = priced("crash", 1, 14).await;
    let ticket = book.ticket(0, 1, period);
    let store = NullifierFile::default();

    // The courier records the job's nullifier... and dies before running it
    // (nothing of the job itself survives: jobs in flight are not durable).
    let gate = TicketGate::new(credits.clone(), &store, &dir.join("courier"))
        .await
        .unwrap();
    gate.admit(&dispatch(1, vec![ticket.clone()]), now_s())
        .await
        .unwrap();
    drop(gate);

    // Restarted over the same store: the client's resend of that job is
    // taken (it paid, and has not run), any other use of the ticket is not.
    let gate = TicketGate::new(credits.clone(), &store, &dir.join("courier"))
        .await
        .unwrap();
    gate.admit(&dispatch(1, vec![ticket.clone()]), now_s())
        .await
        .unwrap();
    let again = gate
        .admit(&dispatch(2, vec![ticket]), now_s())
        .await
        .unwrap_err();
    assert!(again.contains("replay"), "{again}");
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wallet_never_reuses_a_message_id_or_a_ticket_across_a_crash() {
    let dir = temp("wallet");
    let (url, task) = start_ledger(&dir, 3600).await;
    let ledger = LedgerClient::new(&url).unwrap();
    let credits = credits(&url);
    let period = credits.period_at(now_s());
    let path = dir.join("wallet.redb");
    let wallet = Arc::new(Wallet::open(&path).unwrap());
    assert!(wallet.reserve("acme", period, 1).is_err(), "no deposit yet");
    wallet.deposit(&ledger, 6, 60, 100).await.unwrap();
    let identity = wallet.identity().unwrap().commitment();

    // Ids reserved, then a crash before they were proved: gone, not reused.
    assert_eq!(wallet.reserve("acme", period, 2).unwrap(), 0..2);
    drop(wallet);
    let wallet = Arc::new(Wallet::open(&path).unwrap());
    assert_eq!(wallet.identity().unwrap().commitment(), identity);
    let proved = top_up(wallet.clone(), &credits, 3, 2, Arc::new(AtomicU64::new(0)))
        .await
        .unwrap();
    assert_eq!(proved, 3);
    assert_eq!(
        wallet.book().unwrap(),
        vec![("acme".to_string(), period, 3)]
    );
    // The limit counts reserved ids: 2 lost + 3 proved, 1 left.
    assert!(
        top_up(wallet.clone(), &credits, 2, 1, Arc::new(AtomicU64::new(0)))
            .await
            .is_err()
    );

    // A ticket taken for a job is out of the book for good, crash or not.
    let taken = wallet.take("acme", &[period], 2).unwrap();
    drop(wallet);
    let wallet = Wallet::open(&path).unwrap();
    assert_eq!(
        wallet.book().unwrap(),
        vec![("acme".to_string(), period, 1)]
    );
    let rest = wallet.take("acme", &[period], 1).unwrap();
    assert!(!taken.contains(&rest[0]));
    assert!(wallet
        .take("acme", &[period], 1)
        .unwrap_err()
        .to_string()
        .contains("holds 0"));
    // Every ticket has its own nullifier.
    let mut nullifiers: Vec<_> = taken
        .iter()
        .chain(&rest)
        .map(|t| Ticket::decode(t).unwrap().nullifier)
        .collect();
    nullifiers.sort();
    nullifiers.dedup();
    assert_eq!(nullifiers.len(), 3);
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slashed_deposit_stops_paying_once_its_roots_expire() {
    let dir = temp("expiry");
    // Replaced roots expire at once here (an hour by default).
    let (url, task) = start_ledger_with(&dir, 3600, 0).await;
    let ledger = LedgerClient::new(&url).unwrap();
    let mut credits = credits(&url);
    credits.prices = Credits::flat_prices(1);
    let period = credits.period_at(now_s());
    let book = depositor(&ledger, 15).await;
    let (first, second) = (book.ticket(0, 1, period), book.ticket(1, 2, period));
    let gate = TicketGate::new(
        credits.clone(),
        &NullifierFile::default(),
        &dir.join("courier"),
    )
    .await
    .unwrap();
    gate.admit(&dispatch(1, vec![first]), now_s())
        .await
        .unwrap();
    // A wallet proves a book against the root of the moment.
    let wallet = Arc::new(Wallet::open(&dir.join("wallet.redb")).unwrap());
    wallet.deposit(&ledger, 4, 40, 100).await.unwrap();
    let zero = || Arc::new(AtomicU64::new(0));
    top_up(wallet.clone(), &credits, 2, 1, zero())
        .await
        .unwrap();
    ledger
        .slash(book.identity.to_bytes(), "carol")
        .await
        .unwrap();
    assert_eq!(
        ledger.roots().await.unwrap().len(),
        1,
        "only the current root"
    );
    // A courier that fetches the roots after the slash (a gate keeps them
    // for up to 2 s; a fresh one has none yet).
    drop(gate);
    let gate = TicketGate::new(
        credits.clone(),
        &NullifierFile::default(),
        &dir.join("courier"),
    )
    .await
    .unwrap();
    let refused = gate
        .admit(&dispatch(2, vec![second]), now_s())
        .await
        .unwrap_err();
    assert!(refused.contains("not a recent ledger root"), "{refused}");

    // The wallet drops the book the couriers would now refuse, and proves
    // afresh with new message ids (never the dropped ones: that would
    // reveal its secret).
    assert_eq!(drop_stale_tickets(&wallet, &credits).await.unwrap(), 2);
    assert!(wallet.take("acme", &[period], 1).is_err(), "nothing left");
    top_up(wallet.clone(), &credits, 1, 1, zero())
        .await
        .unwrap();
    assert_eq!(drop_stale_tickets(&wallet, &credits).await.unwrap(), 0);
    let fresh = wallet.take("acme", &[period], 1).unwrap();
    gate.admit(&dispatch(3, fresh), now_s()).await.unwrap();
    // A ticket of a period couriers no longer take goes too.
    top_up(wallet.clone(), &credits, 1, 1, zero())
        .await
        .unwrap();
    assert_eq!(
        wallet
            .drop_stale("acme", period, &ledger.roots().await.unwrap())
            .unwrap(),
        0
    );
    assert_eq!(
        wallet
            .drop_stale("acme", period + 1, &ledger.roots().await.unwrap())
            .unwrap(),
        1
    );
    assert!(wallet.book().unwrap().is_empty());
    assert!(
        top_up(wallet.clone(), &credits, 1, 1, zero())
            .await
            .is_err(),
        "2 dropped + 2 proved: the limit of 4 counts the dropped ids"
    );
    task.abort();
}
