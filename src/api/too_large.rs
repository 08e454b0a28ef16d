//! A request message over a plane's size limit is answered with
//! RESOURCE_EXHAUSTED, the code gRPC's own implementations use for it (tonic
//! answers OUT_OF_RANGE). The limit is checked on the message's length
//! prefix, before its body is read, so an oversized request costs the node
//! no memory; this layer only relabels that answer.

use std::task::{Context, Poll};

/// tonic's message for a request over `max_decoding_message_size`, as it
/// appears percent-encoded in `grpc-message`.
const TOO_LARGE: &str = "Error,%20decoded%20message%20length%20too%20large";

/// Wraps a plane's services (`Server::builder().layer(TooLargeLayer)`).
#[derive(Debug, Clone, Copy, Default)]
pub struct TooLargeLayer;

impl<S> tower::Layer<S> for TooLargeLayer {
    type Service = TooLarge<S>;

    fn layer(&self, inner: S) -> TooLarge<S> {
        TooLarge { inner }
    }
}

#[derive(Debug, Clone)]
pub struct TooLarge<S> {
    inner: S,
}

impl<S, Req, ResBody> tower::Service<http::Request<Req>> for TooLarge<S>
where
    S: tower::Service<http::Request<Req>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Req>) -> Self::Future {
        let answer = self.inner.call(req);
        Box::pin(async move {
            let mut resp = answer.await?;
            relabel(resp.headers_mut());
            Ok(resp)
        })
    }
}

/// Rewrites a trailers-only "message too large" answer (OUT_OF_RANGE) to
/// RESOURCE_EXHAUSTED, keeping tonic's message (it names both sizes).
fn relabel(headers: &mut http::HeaderMap) {
    let too_large = headers.get("grpc-status").is_some_and(|s| s == "11")
        && headers
            .get("grpc-message")
            .and_then(|m| m.to_str().ok())
            .is_some_and(|m| m.starts_with(TOO_LARGE));
    if too_large {
        headers.insert("grpc-status", http::HeaderValue::from_static("8"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_too_large_answer_is_relabelled() {
        let status = tonic::Status::out_of_range(
            "Error, decoded message length too large: found 100000000 bytes, the limit is: 65536 bytes",
        );
        let mut h = http::HeaderMap::new();
        status.add_header(&mut h).unwrap();
        relabel(&mut h);
        let back = tonic::Status::from_header_map(&h).unwrap();
        assert_eq!(back.code(), tonic::Code::ResourceExhausted);
        assert!(back.message().contains("found 100000000 bytes"));
        // Another OUT_OF_RANGE stays as it is.
        let other = tonic::Status::out_of_range("slot height out of range");
        let mut h = http::HeaderMap::new();
        other.add_header(&mut h).unwrap();
        relabel(&mut h);
        assert_eq!(
            tonic::Status::from_header_map(&h).unwrap().code(),
            tonic::Code::OutOfRange
        );
    }
}
