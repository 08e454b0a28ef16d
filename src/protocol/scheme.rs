//! The key-type boundary: node/ asks for a protocol by key type and gets a
//! boxed state machine whose inputs and outputs name no curve (shares are
//! `KeyShare`, keys and packages are bytes). This is the only place that
//! maps a `KeyType` to a curve; a new key type (Ed25519 via FROST, say) adds
//! its arm here, its `KeyShare` variant and its protocol files.

use super::curve::{Curve, Package};
use super::keygen::{Keygen, KeygenOutput};
use super::refresh::{Refresh, RefreshOutput};
use super::repair::{RepairHelper, RepairTarget};
use super::reshare::{Member, ReshareSession, Roles};
use super::sign::{Misbehave, Sign, Signature};
use super::{KeyShare, PartyIdx, Protocol, ProtocolError};
use crate::domain::{DerivationPath, Digest32, KeyType};

/// A protocol run of any curve.
pub type Boxed<T> = Box<dyn Protocol<Output = T> + Send>;

type K = k256::Secp256k1;
type P = p256::NistP256;

/// Calls `$f::<C>` with the curve of `$kt`.
macro_rules! by_curve {
    ($kt:expr, $f:ident ( $($arg:expr),* )) => {
        match $kt {
            KeyType::Secp256k1 => $f::<K>($($arg),*),
            KeyType::P256 => $f::<P>($($arg),*),
        }
    };
}

fn boxed<T, X: Protocol<Output = T> + Send + 'static>(x: X) -> Boxed<T> {
    Box::new(x)
}

/// Dealerless keygen of a `key_type` key, `threshold`-of-`n`, as party `me`.
pub fn keygen(
    key_type: KeyType,
    threshold: u8,
    n: u8,
    me: PartyIdx,
    sid: &[u8],
) -> Result<Boxed<KeygenOutput>, ProtocolError> {
    fn go<C: Curve>(
        t: u8,
        n: u8,
        me: PartyIdx,
        sid: &[u8],
    ) -> Result<Boxed<KeygenOutput>, ProtocolError> {
        Keygen::<C>::new(t, n, me, sid).map(boxed)
    }
    by_curve!(key_type, go(threshold, n, me, sid))
}

/// Signing `digest` at `path` with `share`, among `signers`.
pub fn sign(
    share: &KeyShare,
    path: &DerivationPath,
    signers: &[PartyIdx],
    digest: Digest32,
    sid: &[u8],
) -> Result<Boxed<Signature>, ProtocolError> {
    sign_as(share, path, signers, digest, sid, Misbehave::No)
}

/// `sign`, misbehaving as `how` says (a test hook for a misbehaving
/// co-signer).
pub fn sign_as(
    share: &KeyShare,
    path: &DerivationPath,
    signers: &[PartyIdx],
    digest: Digest32,
    sid: &[u8],
    how: Misbehave,
) -> Result<Boxed<Signature>, ProtocolError> {
    fn go<C: Curve>(
        share: &KeyShare,
        path: &DerivationPath,
        signers: &[PartyIdx],
        digest: Digest32,
        sid: &[u8],
        how: Misbehave,
    ) -> Result<Boxed<Signature>, ProtocolError> {
        Sign::<C>::new(share, path, signers, digest, sid)
            .map(|s| s.misbehaving(how))
            .map(boxed)
    }
    by_curve!(share.key_type(), go(share, path, signers, digest, sid, how))
}

/// A complete refresh of `share` (the key's `package` at its current epoch).
pub fn refresh(
    share: KeyShare,
    package: &[u8],
    sid: &[u8],
) -> Result<Boxed<RefreshOutput>, ProtocolError> {
    fn go<C: Curve>(
        share: KeyShare,
        package: &[u8],
        sid: &[u8],
    ) -> Result<Boxed<RefreshOutput>, ProtocolError> {
        Refresh::<C>::new(share, package, sid).map(boxed)
    }
    by_curve!(share.key_type(), go(share, package, sid))
}

/// A repair helper's side: one term to `target`.
pub fn repair_helper(
    share: KeyShare,
    helpers: &[PartyIdx],
    target: PartyIdx,
    sid: &[u8],
) -> Result<Boxed<()>, ProtocolError> {
    fn go<C: Curve>(
        share: KeyShare,
        helpers: &[PartyIdx],
        target: PartyIdx,
        sid: &[u8],
    ) -> Result<Boxed<()>, ProtocolError> {
        RepairHelper::<C>::new(share, helpers, target, sid).map(boxed)
    }
    by_curve!(share.key_type(), go(share, helpers, target, sid))
}

/// A repair target's side: assembles a hollow share of a `key_type` key.
pub fn repair_target(
    key_type: KeyType,
    package: &[u8],
    me: PartyIdx,
    helpers: &[PartyIdx],
) -> Result<Boxed<KeyShare>, ProtocolError> {
    fn go<C: Curve>(
        package: &[u8],
        me: PartyIdx,
        helpers: &[PartyIdx],
    ) -> Result<Boxed<KeyShare>, ProtocolError> {
        RepairTarget::<C>::new(package, me, helpers).map(boxed)
    }
    by_curve!(key_type, go(package, me, helpers))
}

/// What a reshare session needs besides the key type and this party's place.
#[derive(Debug)]
pub struct ReshareArgs<'a> {
    pub roles: Roles,
    /// This party's current share, if it deals.
    pub share: Option<KeyShare>,
    /// The key's current public key package.
    pub package: &'a [u8],
    pub new_threshold: u8,
    pub chain_code: [u8; 32],
    /// Test hook (fault-injection builds): deal one member a bad point.
    pub corrupt_dealing: bool,
}

/// One party's run of a whole reshare (deal, then refresh among the new members).
pub fn reshare(
    key_type: KeyType,
    me: PartyIdx,
    args: ReshareArgs<'_>,
    sid: &[u8],
) -> Result<Boxed<Option<RefreshOutput>>, ProtocolError> {
    fn go<C: Curve>(
        me: PartyIdx,
        a: ReshareArgs<'_>,
        sid: &[u8],
    ) -> Result<Boxed<Option<RefreshOutput>>, ProtocolError> {
        #[allow(unused_mut)]
        let mut s = ReshareSession::<C>::new(
            me,
            a.roles,
            a.share,
            a.package,
            a.new_threshold,
            a.chain_code,
            sid,
        )?;
        #[cfg(feature = "fault-injection")]
        if a.corrupt_dealing {
            s.corrupt_dealing();
        }
        Ok(boxed(s))
    }
    by_curve!(key_type, go(me, args, sid))
}

/// The group key recorded in a public key package (compressed), if the bytes
/// are a package of a `key_type` key.
pub fn package_key(key_type: KeyType, package: &[u8]) -> Option<[u8; 33]> {
    fn go<C: Curve>(package: &[u8]) -> Option<[u8; 33]> {
        let pkg: Package<C> = super::decode(package).ok()?;
        C::compress(pkg.verifying_key()).ok()
    }
    by_curve!(key_type, go(package))
}

/// Independent check of a finished signature with the curve's own crate.
pub fn verify(sig: &Signature, digest: &Digest32) -> Result<(), ProtocolError> {
    super::sign::verify(sig, digest)
}

/// The Ethereum address of a compressed secp256k1 public key.
pub fn eth_address(pk: &[u8]) -> Option<String> {
    let vk = k256::ecdsa::VerifyingKey::from_sec1_bytes(pk).ok()?;
    Some(dkls23::secp256k1::compute_eth_address(vk.as_affine()))
}

/// An import dealing of the `key_type` key `secret` (32 big-endian bytes)
/// to a t-of-n committee: the commitments (SEC1 compressed; the first is the
/// public key) and each member's point (32 bytes), in member order.
pub fn import_deal(
    key_type: KeyType,
    secret: &[u8],
    t: u8,
    n: u8,
) -> Result<ImportDealt, ProtocolError> {
    fn go<C: Curve>(secret: &[u8], t: u8, n: u8) -> Result<ImportDealt, ProtocolError> {
        use k256::elliptic_curve::ff::PrimeField;
        let secret = super::import::secret_scalar::<C>(secret)?;
        let dealing = super::import::deal_key::<C>(&secret, t, n)?;
        let commitments = dealing
            .commitments
            .iter()
            .map(|c| C::compress(c).map(|b| b.to_vec()))
            .collect::<Result<Vec<_>, _>>()?;
        let mut points = Vec::with_capacity(usize::from(n));
        for j in 1..=n {
            let p = dealing
                .point(j)
                .ok_or_else(|| ProtocolError::InvalidArgs(format!("no point for member {j}")))?;
            let mut out = zeroize::Zeroizing::new([0u8; 32]);
            let mut repr = p.to_repr();
            let bytes: &[u8] = repr.as_ref();
            if bytes.len() != 32 {
                return Err(ProtocolError::InvalidArgs("a point is not 32 bytes".into()));
            }
            out.copy_from_slice(bytes);
            zeroize::Zeroize::zeroize(AsMut::<[u8]>::as_mut(&mut repr));
            points.push(out);
        }
        Ok(ImportDealt {
            commitments,
            points,
        })
    }
    by_curve!(key_type, go(secret, t, n))
}

/// What `import_deal` gives.
pub struct ImportDealt {
    pub commitments: Vec<Vec<u8>>,
    pub points: Vec<zeroize::Zeroizing<[u8; 32]>>,
}

impl std::fmt::Debug for ImportDealt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportDealt")
            .field("commitments", &self.commitments.len())
            .field("points", &"<redacted>")
            .finish()
    }
}

/// An import member's check of its dealt `point` (against `commitments` and
/// the approved `public_key`, SEC1) and its share-only party, with the key's
/// public key package (bincode).
pub fn import_receive(
    key_type: KeyType,
    commitments: &[Vec<u8>],
    point: &[u8],
    public_key: &[u8],
    m: Member,
    sid: &[u8],
) -> Result<(KeyShare, Vec<u8>), ProtocolError> {
    fn go<C: Curve>(
        commitments: &[Vec<u8>],
        point: &[u8],
        public_key: &[u8],
        m: Member,
        sid: &[u8],
    ) -> Result<(KeyShare, Vec<u8>), ProtocolError> {
        let commitments = commitments
            .iter()
            .map(|c| C::decompress(c))
            .collect::<Result<Vec<_>, _>>()?;
        let pk = C::decompress(public_key)?;
        let point = super::import::secret_scalar::<C>(point)?;
        let r = super::import::receive::<C>(&commitments, &point, pk, m, sid)?;
        let package = super::encode(&r.package).map_err(ProtocolError::InvalidArgs)?;
        Ok((r.share, package))
    }
    by_curve!(key_type, go(commitments, point, public_key, m, sid))
}

/// Is `public_key` (SEC1) a public key of a `key_type` key?
pub fn import_public_key_ok(key_type: KeyType, public_key: &[u8]) -> Result<(), ProtocolError> {
    fn go<C: Curve>(public_key: &[u8]) -> Result<(), ProtocolError> {
        C::decompress(public_key).map(|_| ())
    }
    by_curve!(key_type, go(public_key))
}
