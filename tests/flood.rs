//! Half-open connections cannot lock peers out (checklist 21): 1,000 TCP
//! connections from another address to node b's peer port, never sending a
//! byte and reopened as soon as b drops them, while node a restarts. The
//! restarted node reconnects to b, and the cluster signs and rotates.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{check_signature, cluster, ADMIN, CLIENT};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn half_open_connections_do_not_lock_a_restarted_node_out() {
    let (_dir, mut c) = cluster(&["a", "b", "c"]).await;
    let info = c
        .client(0, ADMIN)
        .unwrap()
        .create_key("k", 2, &[])
        .await
        .unwrap();
    let target = c.nodes[1].as_ref().unwrap().peer_addr;
    let stop = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(AtomicUsize::new(0));
    let flood: Vec<_> = (0..1000)
        .map(|_| tokio::spawn(common::hold_half_open(target, stop.clone(), opened.clone())))
        .collect();
    // Wait until the flood holds more connections than b has handshake slots.
    let deadline = Instant::now() + Duration::from_secs(60);
    while opened.load(Ordering::Relaxed) < 1000 {
        assert!(Instant::now() < deadline, "the flood never got going");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Node a restarts meanwhile: its new connections to b must get through.
    c.stop_node(0).await;
    c.start_node(0).await.unwrap();
    let started = Instant::now();
    let rotated = c
        .client(0, ADMIN)
        .unwrap()
        .rotate_key("k")
        .await
        .unwrap_or_else(|e| panic!("rotation through the restarted node under the flood: {e}"));
    let rotate_ms = started.elapsed().as_millis();
    assert_eq!(rotated.new_epoch, 1);
    for i in 0..5u8 {
        let d = [i + 1; 32];
        let resp = c
            .client(0, CLIENT)
            .unwrap()
            .sign("k", d, "", "")
            .await
            .unwrap_or_else(|e| panic!("signing under the flood: {e}"));
        check_signature(&resp, &d, &info.public_key);
    }
    stop.store(true, Ordering::Relaxed);
    for f in flood {
        let _ = f.await;
    }
    eprintln!(
        "flood: {} half-open connections opened against b's peer port; a restarted, rotated in \
         {rotate_ms} ms and signed 5 times",
        opened.load(Ordering::Relaxed)
    );
    c.stop().await;
}

/// What a node advertises to one HTTP/2 connection on `addr` as the most
/// streams it may open at once.
async fn advertised_streams(
    c: &thresig::cluster::LocalCluster,
    addr: SocketAddr,
    server: &str,
    role: thresig::pki::Role,
    me: &str,
) -> usize {
    let mut cfg = common::raw_tls_client(c, role, me, &[&rustls::version::TLS13]);
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from(server.to_owned()).unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .unwrap();
    let (send, mut conn) = h2::client::handshake(tls).await.unwrap();
    // The server's SETTINGS arrive with the first frames the connection reads.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut send = send;
    loop {
        let polled = tokio::time::timeout(Duration::from_millis(50), &mut conn).await;
        assert!(polled.is_err(), "the connection ended: {polled:?}");
        send = send.ready().await.unwrap();
        let n = conn.max_concurrent_send_streams();
        // h2 assumes "unlimited" until the server's SETTINGS say otherwise.
        if n != usize::MAX || Instant::now() > deadline {
            return n;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_connection_may_open_a_bounded_number_of_streams() {
    use thresig::pki::Role;
    let (_dir, c) = cluster(&["a", "b"]).await;
    let peer = advertised_streams(
        &c,
        c.nodes[1].as_ref().unwrap().peer_addr,
        "b",
        Role::Node,
        "a",
    )
    .await;
    assert_eq!(peer, thresig::server::MAX_PEER_STREAMS as usize);
    let client =
        advertised_streams(&c, c.configs[1].listen_client, "b", Role::Client, CLIENT).await;
    assert_eq!(client, thresig::server::MAX_CLIENT_STREAMS as usize);

    // Enforced, not only advertised: a client that ignores the setting and
    // opens 16 streams past it has exactly those 16 refused (REFUSED_STREAM),
    // while the streams within the bound stay open.
    let over = 16;
    let refused = refused_streams(
        &c,
        c.configs[1].listen_client,
        "b",
        (Role::Client, CLIENT),
        "/grpc.health.v1.Health/Check",
        client + over,
        over,
    )
    .await;
    let first_over = 2 * client as u32 + 1;
    assert_eq!(
        refused.len(),
        over,
        "client plane: streams refused {refused:?} (bound {client})"
    );
    assert!(
        refused.iter().all(|id| *id >= first_over),
        "a stream within the bound was refused: {refused:?}"
    );
    let refused_peer = refused_streams(
        &c,
        c.nodes[1].as_ref().unwrap().peer_addr,
        "b",
        (Role::Node, "a"),
        "/thresig.peer.v1.Peer/Deliver",
        peer + over,
        over,
    )
    .await;
    assert_eq!(refused_peer.len(), over, "peer plane: {refused_peer:?}");
    assert!(refused_peer.iter().all(|id| *id > 2 * peer as u32));
    eprintln!(
        "streams per connection: peer plane {peer}, client plane {client}; {over} past the bound \
         refused on each"
    );
    c.stop().await;
}

/// One HTTP/2 frame header: length, type, flags, stream id.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// HPACK literal (not indexed) of a header whose name is static-table entry
/// `index` (`index` < 15), or a new name when 0.
fn literal(index: u8, name: &str, value: &str) -> Vec<u8> {
    let mut out = vec![index];
    if index == 0 {
        out.push(name.len() as u8);
        out.extend_from_slice(name.as_bytes());
    }
    out.push(value.len() as u8);
    out.extend_from_slice(value.as_bytes());
    out
}

/// Opens `streams` gRPC streams on one connection to `addr` at once, each a
/// request to `path` whose body never comes (so each stays open), ignoring
/// the server's stream bound as a hostile client would; returns the ids of
/// the streams the server reset with REFUSED_STREAM, once `expect` were.
async fn refused_streams(
    c: &thresig::cluster::LocalCluster,
    addr: SocketAddr,
    server: &str,
    (role, me): (thresig::pki::Role, &str),
    path: &str,
    streams: usize,
    expect: usize,
) -> Vec<u32> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut cfg = common::raw_tls_client(c, role, me, &[&rustls::version::TLS13]);
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from(server.to_owned()).unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .unwrap();
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(0x4, 0, 0, &[])); // SETTINGS, none changed
                                       // :method POST, :scheme https (indexed), :path, :authority, then
                                       // content-type (static name 31) and te.
    let mut block = vec![0x83, 0x87];
    block.extend(literal(4, "", path));
    block.extend(literal(1, "", server));
    block.extend([0x0f, 0x10, 16]);
    block.extend_from_slice(b"application/grpc");
    block.extend(literal(0, "te", "trailers"));
    for i in 0..streams as u32 {
        // HEADERS with END_HEADERS and without END_STREAM: the request stays open.
        out.extend(frame(0x1, 0x4, 2 * i + 1, &block));
    }
    tls.write_all(&out).await.unwrap();
    tls.flush().await.unwrap();
    let mut refused = Vec::new();
    let mut buf = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    // Read frames until `expect` streams were refused (or the deadline; the
    // caller's assertion then says what came). The server takes the streams
    // in order, so a stream within the bound refused by mistake would come
    // before the ones past it.
    while refused.len() < expect {
        while buf.len() >= 9 {
            let len =
                (usize::from(buf[0]) << 16) | (usize::from(buf[1]) << 8) | usize::from(buf[2]);
            if buf.len() < 9 + len {
                break;
            }
            let (kind, flags) = (buf[3], buf[4]);
            let id = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff;
            let payload = buf[9..9 + len].to_vec();
            buf.drain(..9 + len);
            match kind {
                0x4 if flags & 0x1 == 0 => {
                    tls.write_all(&frame(0x4, 0x1, 0, &[])).await.unwrap();
                }
                0x3 if payload == [0, 0, 0, 7] => refused.push(id),
                0x3 => panic!("stream {id} reset with {payload:?}, not REFUSED_STREAM"),
                0x7 => panic!("the server ended the connection (GOAWAY {payload:?})"),
                _ => {}
            }
        }
        let mut chunk = [0u8; 16 * 1024];
        match tokio::time::timeout_at(deadline.into(), tls.read(&mut chunk)).await {
            Ok(Ok(0)) | Err(_) => break,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) => panic!("reading from {addr}: {e}"),
        }
    }
    refused
}
