//! A participant never takes a key's lifecycle (frozen, deleted) from the
//! coordinator alone. Before it takes part in a signing session of a key, it
//! must have compared the key's state with a committee member other than the
//! session's coordinator since this process started (a node that was down
//! while the admins froze the key learns of it here, whoever coordinates),
//! and it compares every key again once a minute, in the background
//! (`server.rs`; never on a session's path). `thresig node run` compares
//! every key with the whole committee before it reports that it serves
//! (`sync_lifecycles`), so a rolling restart finds it ready. A freeze or
//! delete a member applied and this node missed is checked and applied as
//! any catch-up is (`catch_up_lifecycle`), and the session is then refused by
//! the key state check that follows.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use futures::StreamExt;

use super::committee::status_query;
use super::{committee_of, Node, NodeError, Outcome};
use crate::domain::{KeyId, NodeName};
use crate::storage::KeyState;

/// How often a node compares every key's lifecycle with its committee.
pub const RECHECK: Duration = Duration::from_secs(60);
/// How often it compares the keys with a member not heard from since start.
pub const UNHEARD_RECHECK: Duration = Duration::from_secs(5);
/// Keys compared at once by `sync_lifecycles`.
const SYNC_CONCURRENCY: usize = 16;

/// How often a node behind a coordinator's lifecycle sequence compares the
/// key with its committee again.
const SEQ_RECHECK: Duration = Duration::from_secs(2);

/// What this node learned from comparing keys' lifecycles since it started.
#[derive(Debug, Default)]
pub(crate) struct Heard {
    /// Per key: when it was last compared, and every member that has
    /// answered since this process started.
    keys: std::sync::Mutex<HashMap<KeyId, (Instant, HashSet<NodeName>)>>,
}

impl Heard {
    fn get(&self, key: &KeyId) -> Option<(Instant, HashSet<NodeName>)> {
        self.keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(key)
            .cloned()
    }

    fn note(&self, key: &KeyId, answered: Vec<NodeName>) {
        let mut g = self
            .keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = g
            .entry(key.clone())
            .or_insert_with(|| (Instant::now(), HashSet::new()));
        entry.0 = Instant::now();
        entry.1.extend(answered);
    }
}

impl Node {
    /// Records that `members` vouched for `key_id`'s state just now (a key
    /// this node has just generated or joined: there is nothing to miss).
    pub(crate) fn note_heard(&self, key_id: &KeyId, members: &[String]) {
        let members = members
            .iter()
            .filter(|m| m.as_str() != self.name.as_str())
            .filter_map(|m| NodeName::parse(m).ok())
            .collect();
        self.lifecycle_heard.note(key_id, members);
    }

    /// Compares every key this node holds a live share of with the other
    /// members of its committee (each within the probe timeout), applying
    /// what it missed. Returns (keys compared, keys no member answered for).
    pub async fn sync_lifecycles(&self) -> (usize, usize) {
        self.sync_keys(false, false).await
    }

    /// At start, before this node says it serves: `sync_lifecycles`, then
    /// for at most `for_at_most` the keys some member has not answered for
    /// yet, asking every member again (even one that failed moments ago, and
    /// with a longer wait than a probe: a member slow to answer on a busy
    /// host, or just restarted, must not leave this node unvouched when a
    /// rolling restart takes the next member down as soon as this one
    /// serves). `/readyz` reports ready from its end on (see
    /// `server::Startup`). Returns (keys compared, keys no member answered
    /// for).
    pub async fn sync_lifecycles_at_start(&self, for_at_most: Duration) -> (usize, usize) {
        let (keys, first) = self.sync_keys(false, false).await;
        let silent = std::sync::atomic::AtomicUsize::new(first);
        let again = async {
            loop {
                let (unheard, still_silent) = self.sync_keys(true, true).await;
                silent.store(still_silent, std::sync::atomic::Ordering::Relaxed);
                if unheard == 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        let _ = tokio::time::timeout(for_at_most, again).await;
        self.set_comparing_at_start(false);
        (keys, silent.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// `sync_lifecycles` for the keys some member of whose committee has not
    /// answered since this node started (one started before the others, or
    /// a member was down): run every few seconds, so a node soon knows every
    /// member it could fall back on.
    pub async fn sync_unheard_lifecycles(&self) -> (usize, usize) {
        // Patient: a member found down moments ago is asked too (it may
        // have been found down while it was still starting, and a node
        // that skipped it would stay unvouched for the next 30 s).
        self.sync_keys(true, true).await
    }

    /// `patient`: ask members found down moments ago too, and wait three
    /// probe timeouts for each answer.
    async fn sync_keys(&self, only_unheard: bool, patient: bool) -> (usize, usize) {
        let keys: Vec<KeyId> = self
            .store
            .keys()
            .unwrap_or_default()
            .into_iter()
            .filter(|r| matches!(r.state, KeyState::Active | KeyState::Frozen(_)))
            .filter(|r| {
                !only_unheard
                    || self
                        .lifecycle_heard
                        .get(&r.key_id)
                        .map_or(0, |(_, h)| h.len())
                        < r.committee.len().saturating_sub(1)
            })
            .map(|r| r.key_id)
            .collect();
        let total = keys.len();
        let silent = futures::stream::iter(keys)
            .map(|k| async move {
                // A member slow to connect on a busy host is asked once more.
                let first = self.compare_key(&k, patient).await;
                let members = self
                    .key(&k)
                    .map(|r| r.committee.len().saturating_sub(1))
                    .unwrap_or(0);
                if first.len() < members {
                    let again = self.compare_key(&k, patient).await;
                    first.is_empty() && again.is_empty()
                } else {
                    first.is_empty()
                }
            })
            .buffer_unordered(SYNC_CONCURRENCY)
            .filter(|silent| std::future::ready(*silent))
            .count()
            .await;
        (total, silent)
    }

    /// Asks every other member of `key_id`'s committee (not recently found
    /// down, unless `patient`) about the key; returns those that answered,
    /// and records them.
    async fn compare_key(&self, key_id: &KeyId, patient: bool) -> Vec<NodeName> {
        let wait = if patient {
            self.timeouts.ping.saturating_mul(3)
        } else {
            self.timeouts.ping
        };
        self.compare_key_with(key_id, patient, wait).await
    }

    /// `compare_key`, asking members recently found down too when
    /// `ask_down`, and waiting `wait` for each answer.
    async fn compare_key_with(
        &self,
        key_id: &KeyId,
        ask_down: bool,
        wait: Duration,
    ) -> Vec<NodeName> {
        let Ok(rec) = self.key(key_id) else {
            return Vec::new();
        };
        let down = if ask_down {
            Vec::new()
        } else {
            self.recently_down()
        };
        let others: Vec<NodeName> = committee_of(&rec)
            .unwrap_or_default()
            .into_iter()
            .filter(|n| *n != self.name && !down.contains(n))
            .collect();
        let asks = others.iter().map(|n| async move {
            let answered = self.compare_lifecycle(key_id, rec.epoch, n, wait).await;
            if answered {
                self.lifecycle_heard.note(key_id, vec![n.clone()]);
            }
            answered.then(|| n.clone())
        });
        futures::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// Ok once this node has compared `key_id`'s lifecycle with a committee
    /// member other than `coordinator` since it started (and applied any
    /// freeze or delete it had missed); until then it compares now, and
    /// refuses if no such member answers. (The comparison every minute
    /// runs in the background, `sync_lifecycles`.)
    pub(crate) async fn check_lifecycle_heard(
        &self,
        key_id: &KeyId,
        coordinator: &NodeName,
    ) -> Result<(), NodeError> {
        let vouched = |heard: &HashSet<NodeName>| heard.iter().any(|n| n != coordinator);
        if self
            .lifecycle_heard
            .get(key_id)
            .is_some_and(|(_, heard)| vouched(&heard))
        {
            return Ok(());
        }
        let rec = self.key(key_id)?;
        let others: Vec<NodeName> = committee_of(&rec)?
            .into_iter()
            .filter(|n| *n != self.name && n != coordinator)
            .collect();
        if others.is_empty() {
            // A committee of two: nobody else to ask.
            return Ok(());
        }
        // Every other member is asked, even one found down moments ago (it
        // may be back; without an answer this node refuses anyway).
        let answered = self
            .compare_key_with(key_id, true, self.timeouts.ping)
            .await;
        if answered.iter().any(|n| n != coordinator) {
            return Ok(());
        }
        Err(NodeError::Unavailable(format!(
            "node {} has not compared the state of key {key_id} with a committee member other \
             than the coordinator {coordinator} since it started, and none answered ({}); it \
             takes no part in signing with the key until one does",
            self.name,
            super::names(&others)
        )))
    }

    /// A session's coordinator holds `key_id` at lifecycle sequence
    /// `theirs`: Ok if this node does too. A node behind first compares the
    /// key with its committee (and catches up on what t members applied);
    /// a coordinator behind this node (it missed a freeze, or ignores it) is
    /// refused.
    pub(crate) async fn check_lifecycle_seq(
        &self,
        key_id: &KeyId,
        theirs: u64,
        coordinator: &NodeName,
    ) -> Result<(), NodeError> {
        let mut rec = self.key(key_id)?;
        // Behind: compare with the committee, at most once per
        // `SEQ_RECHECK` (a coordinator that names a far sequence on every
        // proposal costs one round of questions, not one per proposal).
        let compared_lately = self
            .lifecycle_heard
            .get(key_id)
            .is_some_and(|(at, _)| at.elapsed() < SEQ_RECHECK);
        if rec.lifecycle_seq < theirs && !compared_lately {
            self.compare_key(key_id, false).await;
            rec = self.key(key_id)?;
        }
        let ours = rec.lifecycle_seq;
        match ours.cmp(&theirs) {
            std::cmp::Ordering::Equal => Ok(()),
            std::cmp::Ordering::Greater => Err(NodeError::FailedPrecondition(format!(
                "key {key_id} is {} at lifecycle sequence {ours} on node {}, the coordinator \
                 {coordinator} says {theirs}: it missed (or ignores) a freeze, unfreeze or \
                 delete; refused",
                rec.state.label(),
                self.name
            ))),
            std::cmp::Ordering::Less => Err(NodeError::Unavailable(format!(
                "key {key_id} is at lifecycle sequence {ours} on node {}, the coordinator \
                 {coordinator} says {theirs}, and t committee members did not confirm the \
                 change this node missed; it takes no part until they do",
                self.name
            ))),
        }
    }

    /// Asks `n` about `key_id`: true if it answered. A freeze or delete it
    /// applied that this node missed is applied here first.
    async fn compare_lifecycle(
        &self,
        key_id: &KeyId,
        epoch: u64,
        n: &NodeName,
        wait: Duration,
    ) -> bool {
        let ask = self.net.propose(n, status_query(key_id, epoch, None));
        match tokio::time::timeout(wait, ask).await {
            Ok(Ok(Outcome::ShareStatus { lifecycle, .. })) => {
                if let Some(p) = lifecycle {
                    if let Some(done) = self.catch_up_lifecycle(n, *p).await {
                        tracing::warn!(key = %key_id, node = %n, %done, "learned a missed key state change");
                    }
                }
                true
            }
            Ok(Ok(_)) => false,
            Ok(Err(e)) => {
                tracing::debug!(key = %key_id, node = %n, error = %e, "lifecycle comparison failed");
                false
            }
            Err(_) => false,
        }
    }
}
