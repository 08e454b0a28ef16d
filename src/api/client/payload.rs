//! The client's typed-payload requests: signing one, building one, a dry
//! run, and the payload's form on the wire.

use super::{Client, ClientError, ClientRequest, SignResponse};
use crate::proto::signer::signer_client::SignerClient;

impl Client {
    /// Signs a typed payload (see `crate::payload`): every node decodes it,
    /// computes what it signs and applies its content policy. `path` is
    /// ignored for a PSBT (its derivations name the paths).
    pub async fn sign_payload(
        &mut self,
        key: &str,
        kind: crate::payload::Kind,
        bytes: &[u8],
        path: &str,
        request_id: &str,
    ) -> Result<SignResponse, ClientError> {
        let req = self.payload_request(key, kind, bytes, path, request_id)?;
        self.sign_request(&req).await
    }

    /// Builds a typed-payload request the way `sign_payload` does.
    pub fn payload_request(
        &self,
        key: &str,
        kind: crate::payload::Kind,
        bytes: &[u8],
        path: &str,
        request_id: &str,
    ) -> Result<ClientRequest, ClientError> {
        let path = if kind.paths_from_payload() { "m" } else { path };
        let mut req = self.request(key, [0; 32], path, request_id, None)?;
        req.payload = Some(crate::node::request::Payload {
            kind,
            bytes: bytes.into(),
            item: 0,
        });
        Ok(req)
    }

    /// A dry run of `request`: every committee node decodes it and
    /// evaluates its policy, and nothing is signed.
    pub async fn evaluate_request(
        &mut self,
        request: &ClientRequest,
    ) -> Result<crate::proto::signer::EvaluateResponse, ClientError> {
        let proto = self.wire_request(request)?;
        self.each_node(|channel, timeout| {
            let mut req = tonic::Request::new(proto.clone());
            if let Some(t) = timeout {
                req.set_timeout(t);
            }
            async move { SignerClient::new(channel).evaluate(req).await }
        })
        .await
    }
}

/// A payload as the signer protocol's `oneof payload`.
pub fn payload_to_pb(
    kind: crate::payload::Kind,
    bytes: Vec<u8>,
) -> crate::proto::signer::sign_request::Payload {
    use crate::payload::Kind;
    use crate::proto::signer::sign_request::Payload as P;
    match kind {
        Kind::EthTransaction => P::EthTransaction(bytes),
        Kind::EthMessage => P::EthMessage(bytes),
        Kind::EthTypedData => P::EthTypedData(bytes),
        Kind::BitcoinPsbt => P::BitcoinPsbt(bytes),
        Kind::CosmosSignDoc => P::CosmosSignDoc(bytes),
    }
}

/// The signer protocol's `oneof payload` as a kind and its bytes.
pub fn payload_from_pb(
    p: crate::proto::signer::sign_request::Payload,
) -> (crate::payload::Kind, Vec<u8>) {
    use crate::payload::Kind;
    use crate::proto::signer::sign_request::Payload as P;
    match p {
        P::EthTransaction(b) => (Kind::EthTransaction, b),
        P::EthMessage(b) => (Kind::EthMessage, b),
        P::EthTypedData(b) => (Kind::EthTypedData, b),
        P::BitcoinPsbt(b) => (Kind::BitcoinPsbt, b),
        P::CosmosSignDoc(b) => (Kind::CosmosSignDoc, b),
    }
}
