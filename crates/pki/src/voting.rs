//! How several directory authorities agree on one document per epoch.
//!
//! Each authority freezes the descriptors it holds for an epoch into a
//! signed [`Vote`] and serves it. Once it holds the votes of every trusted
//! authority (or, past its deadline, of a threshold of them) it computes
//! the [`consensus`]: every node whose identical entry is in at least a
//! threshold of the votes. It endorses that document and collects the
//! others' endorsements of the same bytes; with all of them (or, past the
//! deadline, a threshold) the document is sealed and never changes. As the
//! consensus is a function of the votes alone, authorities that saw the
//! same votes sign the same bytes.
//!
//! [`Voting`] is that exchange for one epoch as a machine: the shell
//! fetches what [`Voting::missing_votes`] and
//! [`Voting::missing_endorsements`] name, feeds it to
//! [`Voting::handle_vote`] and [`Voting::handle_endorsement`], and calls
//! [`Voting::handle_timeout`] with whether the deadline is past.

use std::collections::BTreeMap;

use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Serialize};

use crate::{
    check_signature, decode, encode, labelled, Endorsement, Error, NetworkDocument, NodeEntry,
    Parameters, Trust,
};

const VOTE_LABEL: &[u8] = b"funion authority vote v1";

/// One authority's view of an epoch: the nodes it admitted.
#[derive(Clone, Debug, PartialEq)]
pub struct Vote {
    /// The authority that cast it.
    pub authority: [u8; 32],
    /// The epoch.
    pub epoch: u64,
    /// The parameters it serves.
    pub parameters: Parameters,
    /// The nodes it holds descriptors of, sorted by identity key.
    pub nodes: Vec<NodeEntry>,
}

#[derive(Serialize, Deserialize)]
struct VoteBody {
    epoch: u64,
    parameters: Parameters,
    nodes: Vec<NodeEntry>,
}

#[derive(Serialize, Deserialize)]
struct SignedVote {
    authority: [u8; 32],
    body: Vec<u8>,
    signature: Vec<u8>,
}

impl Vote {
    /// Casts and signs a vote.
    pub fn sign(
        authority: &SigningKey,
        epoch: u64,
        parameters: &Parameters,
        mut nodes: Vec<NodeEntry>,
    ) -> Result<Vec<u8>, Error> {
        nodes.sort_by_key(|n| n.identity_key);
        let body = encode(&VoteBody {
            epoch,
            parameters: parameters.clone(),
            nodes,
        })?;
        let signature = authority
            .sign(&labelled(VOTE_LABEL, &body))
            .to_bytes()
            .to_vec();
        encode(&SignedVote {
            authority: authority.verifying_key().to_bytes(),
            body,
            signature,
        })
    }

    /// Decodes a vote and checks it is signed by one of `trust`'s
    /// authorities.
    pub fn verify(bytes: &[u8], trust: &Trust) -> Result<Vote, Error> {
        let signed: SignedVote = decode(bytes)?;
        if !trust.trusts(&signed.authority) {
            return Err(Error::Invalid(format!(
                "a vote from {}, which is not a trusted authority",
                hex_prefix(&signed.authority)
            )));
        }
        check_signature(
            &signed.authority,
            VOTE_LABEL,
            &signed.body,
            &signed.signature,
        )?;
        let body: VoteBody = decode(&signed.body)?;
        for pair in body.nodes.windows(2) {
            if pair[0].identity_key >= pair[1].identity_key {
                return Err(Error::Invalid(
                    "a vote lists nodes unsorted or twice".into(),
                ));
            }
        }
        Ok(Vote {
            authority: signed.authority,
            epoch: body.epoch,
            parameters: body.parameters,
            nodes: body.nodes,
        })
    }
}

/// The document the votes agree on: `parameters`, and every node whose
/// identical entry at least a threshold of distinct trusted authorities
/// voted for. Fails without votes from a threshold of them, or when a
/// vote is for another epoch or other parameters.
pub fn consensus(
    epoch: u64,
    parameters: &Parameters,
    votes: &[Vote],
    trust: &Trust,
) -> Result<NetworkDocument, Error> {
    let mut voters: Vec<[u8; 32]> = Vec::new();
    let mut tally: BTreeMap<[u8; 32], Vec<(&NodeEntry, usize)>> = BTreeMap::new();
    for vote in votes {
        if !trust.trusts(&vote.authority) || voters.contains(&vote.authority) {
            return Err(Error::Invalid(
                "a vote from an untrusted authority, or two from one".into(),
            ));
        }
        if vote.epoch != epoch || vote.parameters != *parameters {
            return Err(Error::Invalid(format!(
                "the vote of {} is for another epoch or other parameters",
                hex_prefix(&vote.authority)
            )));
        }
        voters.push(vote.authority);
        for node in &vote.nodes {
            let entries = tally.entry(node.identity_key).or_default();
            match entries.iter_mut().find(|(entry, _)| *entry == node) {
                Some((_, count)) => *count += 1,
                None => entries.push((node, 1)),
            }
        }
    }
    if voters.len() < trust.threshold() {
        return Err(Error::Invalid(format!(
            "{} votes; {} are needed",
            voters.len(),
            trust.threshold()
        )));
    }
    // A threshold is a majority, so at most one entry per node reaches it.
    let nodes = tally
        .into_values()
        .filter_map(|entries| {
            entries
                .into_iter()
                .find(|(_, count)| *count >= trust.threshold())
                .map(|(entry, _)| entry.clone())
        })
        .collect();
    NetworkDocument::new(epoch, parameters.clone(), nodes)
}

/// One authority's side of one epoch's vote.
pub struct Voting {
    key: SigningKey,
    trust: Trust,
    epoch: u64,
    parameters: Parameters,
    own_vote: Vec<u8>,
    votes: BTreeMap<[u8; 32], Vote>,
    document: Option<NetworkDocument>,
    endorsements: BTreeMap<[u8; 32], Endorsement>,
    sealed: Option<Vec<u8>>,
}

impl Voting {
    /// Starts the epoch's vote with this authority's own, over `nodes`.
    pub fn new(
        key: SigningKey,
        trust: Trust,
        epoch: u64,
        parameters: Parameters,
        nodes: Vec<NodeEntry>,
    ) -> Result<Self, Error> {
        if !trust.trusts(&key.verifying_key().to_bytes()) {
            return Err(Error::Invalid(
                "this authority's own key is not among the trusted authorities".into(),
            ));
        }
        let own_vote = Vote::sign(&key, epoch, &parameters, nodes)?;
        let mut voting = Voting {
            key,
            trust,
            epoch,
            parameters,
            own_vote,
            votes: BTreeMap::new(),
            document: None,
            endorsements: BTreeMap::new(),
            sealed: None,
        };
        let own = voting.own_vote.clone();
        voting.handle_vote(&own)?;
        voting.handle_timeout(false)?;
        Ok(voting)
    }

    /// This authority's signed vote, as served.
    pub fn own_vote(&self) -> &[u8] {
        &self.own_vote
    }

    /// This authority's endorsement of the consensus, once computed.
    pub fn own_endorsement(&self) -> Option<&Endorsement> {
        let own = self.key.verifying_key().to_bytes();
        self.endorsements.get(&own)
    }

    /// The consensus, once computed.
    pub fn consensus(&self) -> Option<&NetworkDocument> {
        self.document.as_ref()
    }

    /// The sealed document with its endorsements, once it may be served.
    pub fn sealed(&self) -> Option<&[u8]> {
        self.sealed.as_deref()
    }

    /// The trusted authorities whose votes are not in yet (empty once the
    /// consensus is computed: later votes cannot change it).
    pub fn missing_votes(&self) -> Vec<[u8; 32]> {
        if self.document.is_some() {
            return Vec::new();
        }
        self.missing(|k| self.votes.contains_key(k))
    }

    /// The trusted authorities whose endorsements are not in yet (empty
    /// before the consensus and once the document is sealed).
    pub fn missing_endorsements(&self) -> Vec<[u8; 32]> {
        if self.document.is_none() || self.sealed.is_some() {
            return Vec::new();
        }
        self.missing(|k| self.endorsements.contains_key(k))
    }

    fn missing(&self, have: impl Fn(&[u8; 32]) -> bool) -> Vec<[u8; 32]> {
        self.trust
            .keys()
            .iter()
            .filter(|k| !have(k))
            .copied()
            .collect()
    }

    /// A vote fetched from an authority. Refused, with the reason, when it
    /// does not verify, is for another epoch or other parameters, or
    /// differs from a vote that authority already cast.
    pub fn handle_vote(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let vote = Vote::verify(bytes, &self.trust)?;
        if vote.epoch != self.epoch {
            return Err(Error::Invalid(format!(
                "a vote for epoch {}, not {}",
                vote.epoch, self.epoch
            )));
        }
        if vote.parameters != self.parameters {
            return Err(Error::Invalid(format!(
                "the vote of {} has other parameters than this authority's",
                hex_prefix(&vote.authority)
            )));
        }
        match self.votes.get(&vote.authority) {
            Some(held) if *held == vote => Ok(()),
            Some(_) => Err(Error::Invalid(format!(
                "{} cast two different votes for epoch {}",
                hex_prefix(&vote.authority),
                self.epoch
            ))),
            None => {
                self.votes.insert(vote.authority, vote);
                Ok(())
            }
        }
    }

    /// An endorsement fetched from an authority. Refused, with the reason,
    /// before the consensus, from an untrusted key, or when it is not a
    /// valid signature on this authority's consensus (that authority then
    /// computed another document).
    pub fn handle_endorsement(&mut self, endorsement: Endorsement) -> Result<(), Error> {
        let Some(document) = &self.document else {
            return Err(Error::Invalid("no consensus yet to endorse".into()));
        };
        if !self.trust.trusts(&endorsement.authority) {
            return Err(Error::Invalid(format!(
                "an endorsement from {}, which is not a trusted authority",
                hex_prefix(&endorsement.authority)
            )));
        }
        document.check_endorsement(&endorsement).map_err(|_| {
            Error::Invalid(format!(
                "the endorsement of {} is not of this consensus",
                hex_prefix(&endorsement.authority)
            ))
        })?;
        if self.sealed.is_none() {
            self.endorsements.insert(endorsement.authority, endorsement);
        }
        Ok(())
    }

    /// Moves on where it can: computes the consensus once every vote is in
    /// (or, `past_deadline`, a threshold of them), and seals it once every
    /// endorsement is in (or, `past_deadline`, a threshold). Fails when
    /// the votes in make no valid document (a mix layer left empty).
    pub fn handle_timeout(&mut self, past_deadline: bool) -> Result<(), Error> {
        let n = self.trust.keys().len();
        let enough = |have: usize| have == n || (past_deadline && have >= self.trust.threshold());
        if self.document.is_none() && enough(self.votes.len()) {
            let votes: Vec<Vote> = self.votes.values().cloned().collect();
            let document = consensus(self.epoch, &self.parameters, &votes, &self.trust)?;
            let own = document.endorse(&self.key)?;
            self.endorsements.insert(own.authority, own);
            self.document = Some(document);
        }
        if let Some(document) = &self.document {
            if self.sealed.is_none() && enough(self.endorsements.len()) {
                let endorsements: Vec<Endorsement> = self.endorsements.values().cloned().collect();
                self.sealed = Some(document.seal(&endorsements)?);
            }
        }
        Ok(())
    }
}

fn hex_prefix(key: &[u8; 32]) -> String {
    key[..4].iter().map(|b| format!("{b:02x}")).collect()
}
