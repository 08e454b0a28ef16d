//! Echo checks of broadcast rounds: each party reports the hashes of the
//! broadcasts it received, and every party compares them with its own. A
//! lying echoer must not get an honest sender blamed alone (`echo_fault`).

use std::collections::BTreeMap;

use super::{PartyIdx, ProtocolError};

/// The echoes of one broadcast round, compared with what this party
/// received. Every echo is compared before anyone is named, so a conclusive
/// finding (a sender that equivocated, an echoer that misreports its own or
/// our broadcast) wins over a mismatch that only names two suspects.
pub(crate) struct EchoCheck<'a> {
    mine: &'a BTreeMap<PartyIdx, [u8; 32]>,
    me: PartyIdx,
    round: u32,
    faults: Vec<ProtocolError>,
}

impl<'a> EchoCheck<'a> {
    pub(crate) fn new(mine: &'a BTreeMap<PartyIdx, [u8; 32]>, me: PartyIdx, round: u32) -> Self {
        Self {
            mine,
            me,
            round,
            faults: Vec::new(),
        }
    }

    /// Compares `from`'s echo with ours (see `echo_fault` for who is at
    /// fault when they differ). An echo of the wrong parties fails at once.
    pub(crate) fn add(
        &mut self,
        from: PartyIdx,
        theirs: &BTreeMap<PartyIdx, [u8; 32]>,
    ) -> Result<(), ProtocolError> {
        if theirs.len() != self.mine.len() || theirs.keys().ne(self.mine.keys()) {
            return Err(ProtocolError::misbehaved(
                from,
                self.round.saturating_add(1),
                "echo covers the wrong parties",
            ));
        }
        for (sender, h) in self.mine {
            if theirs.get(sender) != Some(h) {
                self.faults
                    .push(echo_fault(*sender, self.me, from, self.round));
            }
        }
        Ok(())
    }

    /// The most conclusive fault found, if any.
    pub(crate) fn finish(self) -> Result<(), ProtocolError> {
        most_conclusive(self.faults)
    }
}

/// Of the echo faults of one round: one that blames a party, else the first.
pub(crate) fn most_conclusive(mut faults: Vec<ProtocolError>) -> Result<(), ProtocolError> {
    match faults.iter().position(|f| f.blamed().is_some()) {
        Some(i) => Err(faults.swap_remove(i)),
        None => faults.into_iter().next().map_or(Ok(()), Err),
    }
}

/// Who is at fault when `echoer`'s echo of `sender`'s round-`round`
/// broadcast differs from what party `me` received. The echoer alone, if
/// the broadcast is its own (it sent us something else) or ours (we know
/// what we sent); otherwise the two are suspects and neither is blamed
/// alone, since the echoer may be lying to frame an honest sender.
pub(crate) fn echo_fault(
    sender: PartyIdx,
    me: PartyIdx,
    echoer: PartyIdx,
    round: u32,
) -> ProtocolError {
    if sender == echoer {
        ProtocolError::Equivocation { sender, round }
    } else if sender == me {
        ProtocolError::misbehaved(
            echoer,
            round.saturating_add(1),
            format!("its echo misreports this party's own round-{round} broadcast"),
        )
    } else {
        ProtocolError::EchoMismatch {
            sender,
            echoer,
            round,
        }
    }
}
