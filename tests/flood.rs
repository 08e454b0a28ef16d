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
    eprintln!("streams per connection: peer plane {peer}, client plane {client}");
    c.stop().await;
}
