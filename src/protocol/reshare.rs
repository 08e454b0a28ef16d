//! Resharing to a new committee and/or threshold with the same public key.
//! dkls23 has no resharing, so this is built here from Feldman VSS:
//!
//! - t dealers of the old committee each deal their Lagrange-weighted share
//!   `s_i = λ_i · x_i` (so that `Σ s_i` is the key) with a fresh polynomial
//!   of degree t' - 1, publishing Feldman commitments to its coefficients.
//! - Every new member checks its point from each dealer against that dealer's
//!   commitments, checks that each dealer's constant-term commitment equals
//!   `λ_i · X_i` (its old verifying share, from the key's public key package),
//!   and that the constant terms add up to the public key. A dealer that
//!   fails a check is named.
//! - The new share is the sum of the points; the new verifying shares follow
//!   from the commitments. The result is a share-only ("hollow") party: a
//!   complete refresh among the new committee then builds the pairwise
//!   signing state.
//!
//! Pure functions, no I/O; the node moves dealings between nodes.

use std::collections::BTreeMap;

use dkls23::protocols::derivation::DerivData;
use dkls23::protocols::Parameters;
use dkls23::utilities::zero_shares::ZeroShare;
use k256::elliptic_curve::ff::{Field, PrimeField};
use k256::elliptic_curve::group::{Curve as _, Group};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use super::curve::{Curve, Package, Party};
use super::refresh::{Refresh, RefreshOutput};
use super::KeyShare;
use super::{check_inbox, party_index, Inbox, Outgoing, PartyIdx, Protocol, ProtocolError, Step};

/// What one dealer sends one new member: the public commitments and that
/// member's private point.
#[derive(Clone, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Dealing<C: Curve> {
    /// Feldman commitments `a_k · G`, k = 0..t'.
    pub commitments: Vec<C::AffinePoint>,
    /// `g(j)` for the receiving member j.
    pub share: C::Scalar,
}

impl<C: Curve> std::fmt::Debug for Dealing<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dealing")
            .field("commitments", &self.commitments.len())
            .finish_non_exhaustive()
    }
}

/// The Lagrange coefficient of `i` at zero over the (old) index set `set`.
fn lagrange_at_zero<C: Curve>(set: &[PartyIdx], i: PartyIdx) -> Result<C::Scalar, ProtocolError> {
    let xi = C::Scalar::from(u64::from(i));
    let mut num = C::Scalar::ONE;
    let mut den = C::Scalar::ONE;
    for &j in set.iter().filter(|&&j| j != i) {
        let xj = C::Scalar::from(u64::from(j));
        num *= xj;
        den *= xj - xi;
    }
    let inv: Option<C::Scalar> = den.invert().into();
    Ok(num * inv.ok_or_else(|| ProtocolError::InvalidArgs("duplicate dealer index".into()))?)
}

fn eval_commitments<C: Curve>(commitments: &[C::AffinePoint], j: PartyIdx) -> C::ProjectivePoint {
    let x = C::Scalar::from(u64::from(j));
    let mut acc = C::ProjectivePoint::identity();
    let mut pow = C::Scalar::ONE;
    for c in commitments {
        acc += C::ProjectivePoint::from(*c) * pow;
        pow *= x;
    }
    acc
}

fn check_dealers(dealers: &[PartyIdx], old_t: u8) -> Result<(), ProtocolError> {
    let mut sorted = dealers.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.len() != dealers.len() || dealers.len() != usize::from(old_t) || dealers.contains(&0)
    {
        return Err(ProtocolError::InvalidArgs(format!(
            "need exactly {old_t} distinct dealers, got {dealers:?}"
        )));
    }
    Ok(())
}

/// A dealer's dealings for every new member 1..=new_n (by new index).
pub fn deal<C: Curve>(
    share: &KeyShare,
    dealers: &[PartyIdx],
    new_t: u8,
    new_n: u8,
) -> Result<BTreeMap<PartyIdx, Dealing<C>>, ProtocolError> {
    let party = C::party(share)?;
    check_dealers(dealers, party.parameters.threshold)?;
    Parameters::new(new_t, new_n).map_err(|_| {
        ProtocolError::InvalidArgs(format!("bad new parameters {new_t}-of-{new_n}"))
    })?;
    let me = party.party_index.as_u8();
    if !dealers.contains(&me) {
        return Err(ProtocolError::InvalidArgs(format!(
            "party {me} is not a dealer"
        )));
    }
    let mut coeffs: Zeroizing<Vec<C::Scalar>> = Zeroizing::new(Vec::with_capacity(new_t.into()));
    coeffs.push(lagrange_at_zero::<C>(dealers, me)? * party.poly_point);
    for _ in 1..new_t {
        coeffs.push(random_scalar::<C>()?);
    }
    let commitments: Vec<C::AffinePoint> = coeffs
        .iter()
        .map(|a| (C::ProjectivePoint::generator() * *a).to_affine())
        .collect();
    let mut out = BTreeMap::new();
    for j in 1..=new_n {
        let x = C::Scalar::from(u64::from(j));
        let mut y = C::Scalar::ZERO;
        for a in coeffs.iter().rev() {
            y = y * x + *a;
        }
        out.insert(
            j,
            Dealing {
                commitments: commitments.clone(),
                share: y,
            },
        );
    }
    Ok(out)
}

/// A uniformly random non-zero scalar from the OS generator (rejection sampling).
fn random_scalar<C: Curve>() -> Result<C::Scalar, ProtocolError> {
    loop {
        let mut repr = Zeroizing::new(<C::Scalar as PrimeField>::Repr::default());
        getrandom::fill(repr.as_mut())
            .map_err(|e| ProtocolError::InvalidArgs(format!("rng: {e}")))?;
        let s: Option<C::Scalar> = C::Scalar::from_repr(*repr).into();
        if let Some(s) = s.filter(|s| !bool::from(s.is_zero())) {
            return Ok(s);
        }
    }
}

/// What a new member holds after resharing: a share-only party and the new
/// public key package (same group key, new verifying shares).
#[derive(Debug)]
pub struct Reshared<C: Curve> {
    pub share: KeyShare,
    pub package: Package<C>,
}

/// Checks every dealing for new member `me` and assembles its share.
/// `dealings` is keyed by the dealer's old index; `old_package` is the key's
/// current public key package. A dealer whose dealing fails is named.
#[allow(clippy::too_many_arguments)]
pub fn assemble<C: Curve>(
    dealings: &BTreeMap<PartyIdx, Dealing<C>>,
    old_package: &Package<C>,
    me: PartyIdx,
    new_t: u8,
    new_n: u8,
    chain_code: [u8; 32],
    session_id: &[u8],
) -> Result<Reshared<C>, ProtocolError> {
    let dealers: Vec<PartyIdx> = dealings.keys().copied().collect();
    check_dealers(&dealers, old_package.threshold())?;
    let parameters = Parameters::new(new_t, new_n).map_err(|_| {
        ProtocolError::InvalidArgs(format!("bad new parameters {new_t}-of-{new_n}"))
    })?;
    if me == 0 || me > new_n {
        return Err(ProtocolError::InvalidArgs(format!(
            "new index {me} not in 1..={new_n}"
        )));
    }
    let pk = *old_package.verifying_key();
    let mut constant_sum = C::ProjectivePoint::identity();
    let mut y = Zeroizing::new(C::Scalar::ZERO);
    for (&i, d) in dealings {
        let blame = |reason: &str| ProtocolError::PeerMisbehaved {
            from: i,
            round: 1,
            reason: reason.to_owned(),
        };
        if d.commitments.len() != usize::from(new_t) {
            return Err(blame("wrong number of commitments"));
        }
        if C::ProjectivePoint::generator() * d.share != eval_commitments::<C>(&d.commitments, me) {
            return Err(blame("dealt a share inconsistent with its commitments"));
        }
        let old_share = old_package
            .verifying_share(party_index(i)?)
            .ok_or_else(|| blame("not a member of the old committee"))?;
        let expected = C::ProjectivePoint::from(*old_share) * lagrange_at_zero::<C>(&dealers, i)?;
        if C::ProjectivePoint::from(d.commitments[0]) != expected {
            return Err(blame("constant term is not its weighted old share"));
        }
        constant_sum += C::ProjectivePoint::from(d.commitments[0]);
        *y += d.share;
    }
    if constant_sum.to_affine() != pk {
        return Err(ProtocolError::InvalidArgs(
            "dealt constant terms do not add up to the public key".into(),
        ));
    }
    let mut verifying_shares = BTreeMap::new();
    for j in 1..=new_n {
        let point = dealings
            .values()
            .fold(C::ProjectivePoint::identity(), |acc, d| {
                acc + eval_commitments::<C>(&d.commitments, j)
            });
        verifying_shares.insert(party_index(j)?, point.to_affine());
    }
    let package = Package::<C>::new(pk, verifying_shares, parameters.clone());
    let party = Party::<C> {
        parameters,
        party_index: party_index(me)?,
        session_id: session_id.to_vec(),
        poly_point: *y,
        pk,
        zero_share: ZeroShare::initialize(Vec::new()),
        mul_senders: BTreeMap::new(),
        mul_receivers: BTreeMap::new(),
        derivation_data: DerivData {
            depth: 0,
            child_number: 0,
            parent_fingerprint: [0; 4],
            poly_point: *y,
            pk,
            chain_code,
        },
        address: C::address(&pk),
    };
    Ok(Reshared {
        share: C::wrap(party),
        package,
    })
}

/// The roles in one reshare session. Session indices are 1-based positions
/// in the session's party list (the new committee in order, then any dealer
/// outside it); the old and new committee indices are the key's party
/// indices before and after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roles {
    /// Session index -> old committee index, for each of the t dealers.
    pub dealers: BTreeMap<PartyIdx, PartyIdx>,
    /// Session index -> new committee index (1..=n'), for each new member.
    pub members: BTreeMap<PartyIdx, PartyIdx>,
}

/// A new member's round-2 message: its digest of each dealer's commitments
/// (echo, so a dealer that showed members different commitments is caught)
/// and its first refresh message.
#[derive(Serialize, Deserialize)]
struct Echoed {
    echo: BTreeMap<PartyIdx, [u8; 32]>,
    inner: Vec<u8>,
}

enum Phase<C: Curve> {
    Init,
    Collect {
        own: Option<Dealing<C>>,
    },
    Refreshing {
        refresh: Box<Refresh<C>>,
        echo: BTreeMap<PartyIdx, [u8; 32]>,
        first: bool,
    },
    Finished,
}

/// One party's run of a whole reshare: round 1 the dealers send each new
/// member its point; every new member checks and assembles its share, then
/// the new members run a complete refresh among themselves (rounds 2-5,
/// the first of which also carries the echo of the commitments). A dealer
/// outside the new committee is done after round 1 (output `None`).
pub struct ReshareSession<C: Curve> {
    me: PartyIdx,
    roles: Roles,
    share: Option<KeyShare>,
    old_package: Package<C>,
    new_t: u8,
    chain_code: [u8; 32],
    sid: Vec<u8>,
    peers: Vec<PartyIdx>,
    round: u32,
    phase: Phase<C>,
    corrupt_dealing: bool,
}

impl<C: Curve> ReshareSession<C> {
    /// `me` is this party's session index; `share` its current share if it is
    /// a dealer; `old_package` the key's current public key package
    /// (bincode); `sid` the execution id.
    pub fn new(
        me: PartyIdx,
        roles: Roles,
        share: Option<KeyShare>,
        old_package: &[u8],
        new_t: u8,
        chain_code: [u8; 32],
        sid: &[u8],
    ) -> Result<Self, ProtocolError> {
        let old_package: Package<C> = super::decode(old_package)
            .map_err(|e| ProtocolError::InvalidArgs(format!("public key package: {e}")))?;
        let new_n = u8::try_from(roles.members.len())
            .map_err(|_| ProtocolError::InvalidArgs("too many new members".into()))?;
        if !roles.members.values().copied().eq(1..=new_n) {
            return Err(ProtocolError::InvalidArgs(
                "new committee indices must be 1..=n' in session order".into(),
            ));
        }
        let old: Vec<PartyIdx> = roles.dealers.values().copied().collect();
        check_dealers(&old, old_package.threshold())?;
        match (roles.dealers.get(&me), &share) {
            (Some(&old_idx), Some(s)) => {
                let p = C::party(s)?;
                if p.party_index.as_u8() != old_idx || p.pk != *old_package.verifying_key() {
                    return Err(ProtocolError::InvalidArgs(format!(
                        "the dealer's share is not old party {old_idx}'s share of this key"
                    )));
                }
            }
            (Some(_), None) => {
                return Err(ProtocolError::InvalidArgs(
                    "a dealer needs its share".into(),
                ))
            }
            (None, _) if !roles.members.contains_key(&me) => {
                return Err(ProtocolError::InvalidArgs(format!(
                    "party {me} is neither a dealer nor a new member"
                )))
            }
            (None, _) => {}
        }
        Ok(Self {
            me,
            roles,
            share,
            old_package,
            new_t,
            chain_code,
            sid: sid.to_vec(),
            peers: Vec::new(),
            round: 0,
            phase: Phase::Init,
            corrupt_dealing: false,
        })
    }

    /// Test hook: this dealer sends the first other new member a point that
    /// does not match its commitments.
    #[cfg(feature = "fault-injection")]
    pub fn corrupt_dealing(&mut self) {
        self.corrupt_dealing = true;
    }

    fn session_index_of_dealer(&self, old: PartyIdx) -> PartyIdx {
        self.roles
            .dealers
            .iter()
            .find(|(_, o)| **o == old)
            .map(|(s, _)| *s)
            .unwrap_or(0)
    }

    fn old_dealers(&self) -> Vec<PartyIdx> {
        self.roles.dealers.values().copied().collect()
    }

    /// Maps an error that names an old committee index (assembly) or a new
    /// one (refresh) back to session indices.
    fn blame_in_session(e: ProtocolError, map: &BTreeMap<PartyIdx, PartyIdx>) -> ProtocolError {
        let back = |i: PartyIdx| {
            map.iter()
                .find(|(_, v)| **v == i)
                .map(|(s, _)| *s)
                .unwrap_or(0)
        };
        match e {
            ProtocolError::PeerMisbehaved {
                from,
                round,
                reason,
            } => ProtocolError::PeerMisbehaved {
                from: back(from),
                round,
                reason,
            },
            ProtocolError::Equivocation { sender, round } => ProtocolError::Equivocation {
                sender: back(sender),
                round,
            },
            ProtocolError::ConfirmationMismatch { from } => {
                ProtocolError::ConfirmationMismatch { from: back(from) }
            }
            ProtocolError::Engine { blame, ban, reason } => ProtocolError::Engine {
                blame: blame.map(back),
                ban,
                reason,
            },
            other => other,
        }
    }

    /// Refresh messages (addressed by new index) readdressed by session index.
    fn to_session(&self, out: Vec<Outgoing>) -> Result<Vec<Outgoing>, ProtocolError> {
        out.into_iter()
            .map(|m| {
                let to = self
                    .roles
                    .members
                    .iter()
                    .find(|(_, j)| **j == m.to)
                    .map(|(s, _)| *s)
                    .ok_or_else(|| ProtocolError::InvalidArgs(format!("no new member {}", m.to)))?;
                Ok(Outgoing {
                    to,
                    payload: m.payload,
                })
            })
            .collect()
    }

    fn collect(
        &mut self,
        inbox: Inbox,
        own: Option<Dealing<C>>,
    ) -> Result<Step<Option<RefreshOutput>>, ProtocolError> {
        let Some(&me_new) = self.roles.members.get(&self.me) else {
            // A dealer leaving the committee: its part is done.
            self.phase = Phase::Finished;
            return Ok(Step::Done(None));
        };
        let mut dealings = BTreeMap::new();
        for (from, raw) in inbox {
            let old = self.roles.dealers.get(&from).copied().ok_or_else(|| {
                ProtocolError::misbehaved(from, 1, "not a dealer of this reshare")
            })?;
            let d: Dealing<C> =
                super::decode(&raw).map_err(|e| ProtocolError::misbehaved(from, 1, e))?;
            dealings.insert(old, d);
        }
        if let (Some(d), Some(&old)) = (own, self.roles.dealers.get(&self.me)) {
            dealings.insert(old, d);
        }
        let new_n = self.roles.members.len() as u8;
        let reshared = assemble(
            &dealings,
            &self.old_package,
            me_new,
            self.new_t,
            new_n,
            self.chain_code,
            &self.sid,
        )
        .map_err(|e| Self::blame_in_session(e, &self.roles.dealers))?;
        let mut echo: BTreeMap<PartyIdx, [u8; 32]> = BTreeMap::new();
        for (&old, d) in &dealings {
            let mut h = Sha256::new();
            for c in &d.commitments {
                h.update(C::compress(c).map_err(|_| {
                    let from = self.session_index_of_dealer(old);
                    ProtocolError::misbehaved(from, 1, "a commitment is the identity")
                })?);
            }
            echo.insert(old, h.finalize().into());
        }
        for d in dealings.values_mut() {
            zeroize::Zeroize::zeroize(&mut d.share);
        }
        let package = super::encode(&reshared.package).map_err(ProtocolError::InvalidArgs)?;
        let mut refresh_sid = self.sid.clone();
        refresh_sid.extend_from_slice(b"/refresh");
        let mut refresh = Refresh::<C>::new(reshared.share, &package, &refresh_sid)?;
        let first = refresh.start()?;
        let mut out = Vec::with_capacity(first.len());
        for m in self.to_session(first)? {
            let payload = super::encode(&Echoed {
                echo: echo.clone(),
                inner: m.payload,
            })
            .map_err(ProtocolError::InvalidArgs)?;
            out.push(Outgoing { to: m.to, payload });
        }
        self.peers = self
            .roles
            .members
            .keys()
            .copied()
            .filter(|s| *s != self.me)
            .collect();
        self.phase = Phase::Refreshing {
            refresh: Box::new(refresh),
            echo,
            first: true,
        };
        Ok(Step::Send {
            messages: out,
            partial_signature: false,
        })
    }
}

impl<C: Curve> Protocol for ReshareSession<C> {
    type Output = Option<RefreshOutput>;

    fn me(&self) -> PartyIdx {
        self.me
    }

    fn peers(&self) -> &[PartyIdx] {
        &self.peers
    }

    fn start(&mut self) -> Result<Vec<Outgoing>, ProtocolError> {
        if !matches!(self.phase, Phase::Init) {
            return Err(ProtocolError::InvalidArgs("reshare already started".into()));
        }
        self.round = 1;
        let mut own = None;
        let mut out = Vec::new();
        if let Some(share) = &self.share {
            let new_n = self.roles.members.len() as u8;
            let mut dealt = deal::<C>(share, &self.old_dealers(), self.new_t, new_n)?;
            let mut corrupt = self.corrupt_dealing;
            for (&s, j) in &self.roles.members {
                let Some(mut d) = dealt.remove(j) else {
                    return Err(ProtocolError::InvalidArgs(format!("no dealing for {j}")));
                };
                if s == self.me {
                    own = Some(d);
                    continue;
                }
                if std::mem::take(&mut corrupt) {
                    d.share += C::Scalar::ONE;
                }
                let payload = super::encode(&d).map_err(ProtocolError::InvalidArgs)?;
                zeroize::Zeroize::zeroize(&mut d.share);
                out.push(Outgoing { to: s, payload });
            }
        }
        if self.roles.members.contains_key(&self.me) {
            self.peers = self
                .roles
                .dealers
                .keys()
                .copied()
                .filter(|s| *s != self.me)
                .collect();
        }
        self.phase = Phase::Collect { own };
        Ok(out)
    }

    fn advance(&mut self, inbox: Inbox) -> Result<Step<Self::Output>, ProtocolError> {
        check_inbox(&inbox, &self.peers, self.round)?;
        let phase = std::mem::replace(&mut self.phase, Phase::Finished);
        self.round += 1;
        match phase {
            Phase::Collect { own } => self.collect(inbox, own),
            Phase::Refreshing {
                mut refresh,
                echo,
                first,
            } => {
                let mut inner = Inbox::new();
                for (from, raw) in inbox {
                    let j = *self.roles.members.get(&from).ok_or_else(|| {
                        ProtocolError::misbehaved(from, self.round - 1, "not a new member")
                    })?;
                    let payload = if first {
                        let m: Echoed = super::decode(&raw)
                            .map_err(|e| ProtocolError::misbehaved(from, self.round - 1, e))?;
                        if let Some((&old, _)) =
                            echo.iter().find(|(old, h)| m.echo.get(old) != Some(h))
                        {
                            let dealer = self.session_index_of_dealer(old);
                            return Err(ProtocolError::Equivocation {
                                sender: dealer,
                                round: 1,
                            });
                        }
                        zeroize::Zeroizing::new(m.inner)
                    } else {
                        raw
                    };
                    inner.insert(j, payload);
                }
                match refresh
                    .advance(inner)
                    .map_err(|e| Self::blame_in_session(e, &self.roles.members))?
                {
                    Step::Send { messages, .. } => {
                        let messages = self.to_session(messages)?;
                        self.phase = Phase::Refreshing {
                            refresh,
                            echo,
                            first: false,
                        };
                        Ok(Step::Send {
                            messages,
                            partial_signature: false,
                        })
                    }
                    Step::Done(o) => Ok(Step::Done(Some(o))),
                }
            }
            Phase::Init | Phase::Finished => Err(ProtocolError::InvalidArgs(
                "reshare advanced out of order".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{DerivationPath, Digest32};
    use crate::protocol::inproc::run;
    use crate::protocol::keygen::Keygen;
    use crate::protocol::refresh::Refresh;
    use crate::protocol::sign::{verify, Sign};
    use crate::protocol::{decode, encode};

    type K = k256::Secp256k1;
    type PublicKeyPackage = Package<K>;
    type Scalar = <K as k256::elliptic_curve::CurveArithmetic>::Scalar;

    fn dup(s: &KeyShare) -> KeyShare {
        KeyShare::decode(s.key_type(), &s.encode().unwrap()).unwrap()
    }

    fn reshare(
        outs: &[crate::protocol::keygen::KeygenOutput],
        dealers: &[u8],
        new_t: u8,
        new_n: u8,
        tamper: Option<(u8, u8)>,
    ) -> Vec<Result<Reshared<K>, ProtocolError>> {
        let old_pkg: PublicKeyPackage = decode(&outs[0].package).unwrap();
        let cc = outs[0].chain_code;
        let dealt: BTreeMap<u8, BTreeMap<u8, Dealing<K>>> = dealers
            .iter()
            .map(|&i| {
                (
                    i,
                    deal::<K>(&outs[(i - 1) as usize].share, dealers, new_t, new_n).unwrap(),
                )
            })
            .collect();
        (1..=new_n)
            .map(|j| {
                let mut mine: BTreeMap<u8, Dealing<K>> =
                    dealt.iter().map(|(&i, d)| (i, d[&j].clone())).collect();
                if let Some((bad_dealer, victim)) = tamper {
                    if victim == j {
                        mine.get_mut(&bad_dealer).unwrap().share += Scalar::ONE;
                    }
                }
                assemble(&mine, &old_pkg, j, new_t, new_n, cc, b"reshare-sid")
            })
            .collect()
    }

    fn keygen(t: u8, n: u8) -> Vec<crate::protocol::keygen::KeygenOutput> {
        run(
            (1..=n)
                .map(|i| Keygen::<K>::new(t, n, i, &[6; 32]).unwrap())
                .collect(),
            None,
        )
        .into_iter()
        .map(|r| r.unwrap())
        .collect()
    }

    #[test]
    fn reshare_two_of_three_to_three_of_four_keeps_the_key_and_signs_after_refresh() {
        let outs = keygen(2, 3);
        let new: Vec<Reshared<K>> = reshare(&outs, &[1, 3], 3, 4, None)
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
        for r in &new {
            assert_eq!(
                K::party(&r.share).unwrap().pk,
                K::party(&outs[0].share).unwrap().pk
            );
            assert_eq!(
                encode(&r.package).unwrap(),
                encode(&new[0].package).unwrap()
            );
        }
        let pkg = encode(&new[0].package).unwrap();
        let refreshed: Vec<_> = run(
            new.into_iter()
                .map(|r| Refresh::<K>::new(r.share, &pkg, b"after").unwrap())
                .collect(),
            None,
        )
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
        let d = Digest32([2; 32]);
        let p = DerivationPath::default();
        let signers = [1u8, 2, 4];
        let sigs = run(
            signers
                .iter()
                .map(|&i| {
                    Sign::<K>::new(&refreshed[(i - 1) as usize].share, &p, &signers, d, b"s")
                        .unwrap()
                })
                .collect(),
            None,
        );
        for s in sigs {
            let s = s.unwrap();
            verify(&s, &d).unwrap();
            assert_eq!(s.public_key, outs[0].public_key);
        }
    }

    /// Runs a whole reshare session: old committee `old` (1-based old
    /// indices of `outs`), dealers by old index, the new committee as a list
    /// of (old index or None for a newcomer). Session order: new committee,
    /// then dealers outside it.
    fn session(
        outs: &[crate::protocol::keygen::KeygenOutput],
        dealers: &[u8],
        new: &[Option<u8>],
        new_t: u8,
        tamper: Option<crate::protocol::inproc::Tamper<'_>>,
    ) -> (Vec<Result<Option<RefreshOutput>, ProtocolError>>, Roles) {
        let mut order: Vec<Option<u8>> = new.to_vec();
        order.extend(
            dealers
                .iter()
                .filter(|d| !new.contains(&Some(**d)))
                .map(|d| Some(*d)),
        );
        let roles = Roles {
            dealers: order
                .iter()
                .enumerate()
                .filter_map(|(s, o)| o.filter(|o| dealers.contains(o)).map(|o| (s as u8 + 1, o)))
                .collect(),
            members: (1..=new.len() as u8).map(|j| (j, j)).collect(),
        };
        let parties = order
            .iter()
            .enumerate()
            .map(|(s, o)| {
                let s = s as u8 + 1;
                let share = o
                    .filter(|o| dealers.contains(o))
                    .map(|o| dup(&outs[(o - 1) as usize].share));
                ReshareSession::<K>::new(
                    s,
                    roles.clone(),
                    share,
                    &outs[0].package,
                    new_t,
                    outs[0].chain_code,
                    b"eid",
                )
                .unwrap()
            })
            .collect();
        (run(parties, tamper), roles)
    }

    fn sign_with(shares: &[&KeyShare], signers: &[u8], pk: &[u8]) {
        let d = Digest32([4; 32]);
        let p = DerivationPath::default();
        let sigs = run(
            shares
                .iter()
                .map(|s| Sign::<K>::new(s, &p, signers, d, b"s").unwrap())
                .collect(),
            None,
        );
        for s in sigs {
            let s = s.unwrap();
            verify(&s, &d).unwrap();
            assert_eq!(s.public_key.as_slice(), pk);
        }
    }

    #[test]
    fn reshare_session_moves_the_key_to_a_new_committee_and_threshold() {
        let outs = keygen(2, 3);
        // {1,2,3} 2-of-3 -> {2,3,new} 3-of-3 with dealers 1 and 3: dealer 1 leaves.
        let (results, _) = session(&outs, &[1, 3], &[Some(2), Some(3), None], 3, None);
        assert_eq!(results.len(), 4);
        let members: Vec<RefreshOutput> = results[..3]
            .iter()
            .map(|r| {
                r.as_ref()
                    .unwrap()
                    .as_ref()
                    .map(|o| RefreshOutput {
                        share: dup(&o.share),
                        package: o.package.clone(),
                        confirmation: o.confirmation,
                    })
                    .unwrap()
            })
            .collect();
        assert!(
            matches!(results[3], Ok(None)),
            "the leaving dealer gets no share"
        );
        for m in &members {
            assert_eq!(m.confirmation, members[0].confirmation);
            assert_eq!(K::party(&m.share).unwrap().parameters.threshold, 3);
            assert_eq!(K::party(&m.share).unwrap().parameters.share_count, 3);
        }
        let shares: Vec<&KeyShare> = members.iter().map(|m| &m.share).collect();
        sign_with(&shares, &[1, 2, 3], &outs[0].public_key);
        // Old party 2 is new party 1: its share changed.
        assert_ne!(
            K::party(&members[0].share).unwrap().poly_point,
            K::party(&outs[1].share).unwrap().poly_point
        );
    }

    #[test]
    fn a_dealer_showing_members_different_commitments_is_named_by_the_echo() {
        let outs = keygen(2, 3);
        // Dealer 2 (session index 2) gives member 1 a self-consistent dealing
        // from another polynomial with the same constant term.
        let forged = {
            let d = deal::<K>(&outs[1].share, &[1, 2], 2, 3).unwrap();
            encode(&d[&1]).unwrap()
        };
        let mut tamper = |round: u32, from: u8, to: u8, payload: &mut Vec<u8>| {
            if round == 1 && from == 2 && to == 1 {
                *payload = forged.clone();
            }
        };
        let (results, _) = session(
            &outs,
            &[1, 2],
            &[Some(1), Some(2), Some(3)],
            2,
            Some(&mut tamper),
        );
        let blamed: Vec<_> = results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .map(|e| e.blamed())
            .collect();
        assert!(results.iter().all(|r| r.is_err()), "no member may finish");
        assert!(blamed.contains(&Some(2)), "{blamed:?}");
    }

    #[test]
    fn a_dealer_inconsistent_with_its_commitments_is_named() {
        let outs = keygen(2, 3);
        let results = reshare(&outs, &[2, 3], 2, 3, Some((3, 1)));
        let err = results[0].as_ref().unwrap_err();
        assert_eq!(err.blamed(), Some(3), "{err}");
        assert!(
            err.to_string()
                .contains("inconsistent with its commitments"),
            "{err}"
        );
        assert!(results[1].is_ok() && results[2].is_ok());
    }

    #[test]
    fn a_dealer_that_deals_something_other_than_its_share_is_named() {
        let outs = keygen(2, 3);
        // Dealer 2 deals a fresh, self-consistent polynomial that is not its share.
        let old_pkg: PublicKeyPackage = decode(&outs[0].package).unwrap();
        let mut forged = K::party(&outs[1].share).unwrap().clone();
        forged.poly_point += Scalar::ONE;
        let forged = K::wrap(forged);
        let d1 = deal::<K>(&outs[0].share, &[1, 2], 2, 2).unwrap();
        let d2 = deal::<K>(&forged, &[1, 2], 2, 2).unwrap();
        let mine: BTreeMap<u8, Dealing<K>> = [(1, d1[&1].clone()), (2, d2[&1].clone())].into();
        let err = assemble(&mine, &old_pkg, 1, 2, 2, outs[0].chain_code, b"x").unwrap_err();
        assert_eq!(err.blamed(), Some(2), "{err}");
    }
}
