//! The compute courier's accepted jobs on disk: a redb file in the node's
//! data folder (`compute-jobs.redb`, 0600: it holds dispatches, caps and
//! reply SURBs). A job is written, and committed, before its "accepted"
//! leaves, and removed once its output is out; after a crash or restart
//! the courier takes every job still there again
//! ([`funion_compute::ComputeCourier::restore`]).
//!
//! Commits run on a thread of their own, never on the async workers: the
//! driver hands over the writes with the answers that must wait for them,
//! and the thread sends those answers once the commit is done.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::Delivery;

/// Accepted jobs by their output write cap.
const JOBS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("accepted_jobs");

/// One accepted job as kept on disk, times in microseconds since the Unix
/// epoch (a restarted courier has a new clock).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredJob {
    /// The dispatch, encoded as it came.
    pub dispatch: Vec<u8>,
    /// When it was taken.
    pub taken_unix_us: u64,
    /// Its edge, or its fetch deadline while `edge_fixed` is false.
    pub edge_unix_us: u64,
    /// Whether the edge is known.
    pub edge_fixed: bool,
    /// The held reply SURB and until when it works.
    pub reply: Option<(Vec<u8>, u64)>,
}

/// A change to the store, applied in order within one commit.
#[derive(Clone, Debug)]
pub enum Change {
    /// Keep (or replace) the job under this key.
    Put(Vec<u8>, StoredJob),
    /// Drop the job under this key.
    Remove(Vec<u8>),
}

enum Work {
    Commit {
        changes: Vec<Change>,
        /// Answers to send once the commit is done, and where.
        then: Vec<Delivery>,
        replies: Option<mpsc::Sender<Delivery>>,
    },
}

/// The accepted-job store and its writer thread.
pub struct JobStore {
    db: Arc<Database>,
    work: std::sync::mpsc::Sender<Work>,
}

impl JobStore {
    /// Opens (or creates) `data_dir/compute-jobs.redb`. A store still held
    /// by a node that is stopping is waited for, up to ten seconds.
    pub async fn open(data_dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(data_dir)?;
        let path = data_dir.join("compute-jobs.redb");
        let mut tries = 0;
        let db = loop {
            match Database::create(&path) {
                Ok(db) => break db,
                Err(redb::DatabaseError::DatabaseAlreadyOpen) if tries < 500 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => anyhow::bail!("{}: {e}", path.display()),
            }
        };
        restrict(&path)?;
        let db = Arc::new(db);
        {
            let txn = db.begin_write()?;
            txn.open_table(JOBS)?;
            txn.commit()?;
        }
        let (work, inbox) = std::sync::mpsc::channel::<Work>();
        let writer = db.clone();
        std::thread::Builder::new()
            .name("funion-compute-jobs".into())
            .spawn(move || {
                while let Ok(Work::Commit {
                    changes,
                    then,
                    replies,
                }) = inbox.recv()
                {
                    if let Err(error) = commit(&writer, &changes) {
                        // Still answered: the job is held in memory and
                        // runs; only a crash before its edge would lose it.
                        tracing::error!(%error, "compute courier: accepted jobs not written");
                    }
                    if let Some(replies) = replies {
                        for delivery in then {
                            let _ = replies.try_send(delivery);
                        }
                    }
                }
            })?;
        Ok(JobStore { db, work })
    }

    /// Every job kept, with its key; a record that does not decode is
    /// reported and dropped.
    pub fn load(&self) -> anyhow::Result<Vec<(Vec<u8>, StoredJob)>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(JOBS)?;
        let mut jobs = Vec::new();
        let mut damaged = Vec::new();
        for entry in table.iter()? {
            let (key, value) = entry?;
            match postcard::from_bytes::<StoredJob>(value.value()) {
                Ok(job) => jobs.push((key.value().to_vec(), job)),
                Err(error) => {
                    tracing::error!(%error, "compute courier: an accepted job's record is damaged");
                    damaged.push(key.value().to_vec());
                }
            }
        }
        drop(table);
        drop(txn);
        if !damaged.is_empty() {
            commit(
                &self.db,
                &damaged.into_iter().map(Change::Remove).collect::<Vec<_>>(),
            )?;
        }
        Ok(jobs)
    }

    /// Applies `changes` in one commit on the writer thread, then sends
    /// `then` to `replies`. Returns at once.
    pub fn commit_then_send(
        &self,
        changes: Vec<Change>,
        then: Vec<Delivery>,
        replies: &mpsc::Sender<Delivery>,
    ) {
        let work = Work::Commit {
            changes,
            then,
            replies: Some(replies.clone()),
        };
        if self.work.send(work).is_err() {
            tracing::error!("compute courier: the accepted-job writer stopped");
        }
    }

    /// Applies `changes` and waits for the commit (for tests, and for a
    /// driver that has nothing to send after it).
    pub fn commit_now(&self, changes: &[Change]) -> anyhow::Result<()> {
        commit(&self.db, changes)
    }
}

fn commit(db: &Database, changes: &[Change]) -> anyhow::Result<()> {
    if changes.is_empty() {
        return Ok(());
    }
    let txn = db.begin_write()?;
    {
        let mut table = txn.open_table(JOBS)?;
        for change in changes {
            match change {
                Change::Put(key, job) => {
                    table.insert(key.as_slice(), postcard::to_allocvec(job)?.as_slice())?;
                }
                Change::Remove(key) => {
                    table.remove(key.as_slice())?;
                }
            }
        }
    }
    txn.commit()?;
    Ok(())
}

#[cfg(unix)]
fn restrict(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

#[cfg(not(unix))]
fn restrict(_path: &Path) -> anyhow::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(n: u8) -> StoredJob {
        StoredJob {
            dispatch: vec![n; 40],
            taken_unix_us: 1_000 + u64::from(n),
            edge_unix_us: 9_000,
            edge_fixed: n % 2 == 0,
            reply: (n == 1).then(|| (vec![7; 90], 12_000)),
        }
    }

    #[tokio::test]
    async fn jobs_outlive_the_store_and_go_once_forgotten() {
        let dir = std::env::temp_dir().join(format!("compute-jobs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let store = JobStore::open(&dir).await.unwrap();
            let puts: Vec<Change> = (1..=3).map(|n| Change::Put(vec![n], job(n))).collect();
            store.commit_now(&puts).unwrap();
            // In order: a job dropped and another kept under its key.
            store
                .commit_now(&[Change::Remove(vec![2]), Change::Remove(vec![3])])
                .unwrap();
            store
                .commit_now(&[Change::Remove(vec![3]), Change::Put(vec![3], job(3))])
                .unwrap();
        }
        // Opened again (a restarted node): what was kept is there, what was
        // forgotten is not, and only the owner may read the file.
        let store = JobStore::open(&dir).await.unwrap();
        let mut kept = store.load().unwrap();
        kept.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(kept, vec![(vec![1], job(1)), (vec![3], job(3))]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join("compute-jobs.redb"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // A damaged record is dropped, not fatal.
        {
            let txn = store.db.begin_write().unwrap();
            txn.open_table(JOBS)
                .unwrap()
                .insert([9u8].as_slice(), [0xff_u8; 3].as_slice())
                .unwrap();
            txn.commit().unwrap();
        }
        assert_eq!(store.load().unwrap().len(), 2);
        assert_eq!(store.load().unwrap().len(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
