//! Unit tests of the node configuration.

use super::*;

const GOOD: &str = r#"
[node]
name = "a"
trust_domain = "thresig.local"
data_dir = "data/a"
[listen]
peer = "127.0.0.1:7400"
client = "127.0.0.1:7401"
[tls]
ca = "certs/ca.pem"
cert = "certs/nodes/a.pem"
key = "certs/nodes/a.key"
[[peers]]
name = "a"
peer_addr = "127.0.0.1:7400"
client_addr = "127.0.0.1:7401"
"#;

#[test]
fn parses_and_round_trips() {
    let c = NodeConfig::parse(GOOD, Path::new("/etc/thresig")).unwrap();
    assert_eq!(c.data_dir, PathBuf::from("/etc/thresig/data/a"));
    assert_eq!(c.passphrase, PassphraseSource::Env(PASSPHRASE_ENV.into()));
    let again = NodeConfig::parse(&c.to_toml(), Path::new("/")).unwrap();
    assert_eq!(again.peers, c.peers);
    assert_eq!(again.tls.key, c.tls.key);
}

#[test]
fn limits_default_parse_round_trip_and_are_checked() {
    let c = NodeConfig::parse(GOOD, Path::new("/")).unwrap();
    assert_eq!(
        c.connection_caps,
        crate::transport::ConnectionCaps::default()
    );
    assert_eq!(
        c.refusal_budget,
        crate::node::refusals::RefusalBudget::default()
    );
    let set = format!(
        "{GOOD}\n[limits]\nconnections_per_node = 8\nconnections_per_client = 20\n\
         refusal_window_secs = 30\nrefusals_audited = 3\nrefusals_per_window = 7\n"
    );
    let c = NodeConfig::parse(&set, Path::new("/")).unwrap();
    assert_eq!(
        (c.connection_caps.per_node, c.connection_caps.per_client),
        (8, 20)
    );
    assert_eq!(
        (
            c.refusal_budget.window,
            c.refusal_budget.audited,
            c.refusal_budget.limit
        ),
        (Duration::from_secs(30), 3, 7)
    );
    let again = NodeConfig::parse(&c.to_toml(), Path::new("/")).unwrap();
    assert_eq!(again.connection_caps, c.connection_caps);
    assert_eq!(again.refusal_budget, c.refusal_budget);
    for (bad, why) in [
        ("connections_per_node = 0", "must be above zero"),
        ("connections_per_client = 100000", "at most 65536"),
        ("refusal_window_secs = 7200", "at most 3600"),
        ("bogus = 1", "bogus"),
    ] {
        let e = NodeConfig::parse(&format!("{GOOD}\n[limits]\n{bad}\n"), Path::new("/"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(why), "{bad}: {e}");
        if !bad.starts_with("bogus") {
            let name = bad.split(' ').next().unwrap_or_default();
            assert!(e.contains(&format!("limits.{name}")), "{bad}: {e}");
        }
    }
}

#[test]
fn peers_may_be_named_by_dns() {
    let named = GOOD.replace(
        "peer_addr = \"127.0.0.1:7400\"",
        "peer_addr = \"a.thresig.svc.cluster.local:7400\"",
    );
    let c = NodeConfig::parse(&named, Path::new("/")).unwrap();
    assert_eq!(c.peers[0].peer_addr.host(), "a.thresig.svc.cluster.local");
    let again = NodeConfig::parse(&c.to_toml(), Path::new("/")).unwrap();
    assert_eq!(again.peers, c.peers);
}

#[test]
fn errors_name_the_field() {
    let unknown = GOOD.replace("[listen]", "[listen]\nbogus = 1");
    assert!(NodeConfig::parse(&unknown, Path::new("/"))
        .unwrap_err()
        .to_string()
        .contains("bogus"));
    let bad_addr = GOOD.replace("client = \"127.0.0.1:7401\"", "client = \"localhost\"");
    assert!(NodeConfig::parse(&bad_addr, Path::new("/"))
        .unwrap_err()
        .to_string()
        .contains("listen.client"));
    let bad_peer = GOOD.replace("name = \"a\"\npeer_addr", "name = \"A!\"\npeer_addr");
    assert!(NodeConfig::parse(&bad_peer, Path::new("/"))
        .unwrap_err()
        .to_string()
        .contains("peers[0].name"));
    let no_port = GOOD.replace(
        "peer_addr = \"127.0.0.1:7400\"",
        "peer_addr = \"a.example\"",
    );
    let e = NodeConfig::parse(&no_port, Path::new("/"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("peers[0].peer_addr") && e.contains("HOST:PORT"),
        "{e}"
    );
    let zero = format!("{GOOD}\n[timeouts]\nround_ms = 0\n");
    assert!(NodeConfig::parse(&zero, Path::new("/"))
        .unwrap_err()
        .to_string()
        .contains("timeouts.round_ms"));
}

mod passphrase_tests {
    use super::PassphraseSource;

    /// The taken passphrase is process-wide: these tests take turns.
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn a_taken_passphrase_is_forgotten_once_the_store_key_is_derived() {
        let _turn = TURN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let var = "THRESIG_TEST_FORGET_PASSPHRASE";
        std::env::set_var(var, "forget me");
        let src = PassphraseSource::Env(var.into());
        src.take_from_env().unwrap();
        assert_eq!(src.read().unwrap().expose(), b"forget me");
        PassphraseSource::forget_taken();
        assert!(src.read().is_err(), "the passphrase outlived its use");
    }

    #[test]
    fn a_passphrase_taken_from_the_environment_leaves_it() {
        let _turn = TURN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let var = "THRESIG_TEST_PASSPHRASE_LEAVES_ENV";
        std::env::set_var(var, "correct horse\n");
        let source = PassphraseSource::Env(var.into());
        source.take_from_env().unwrap();
        assert!(
            std::env::var(var).is_err(),
            "the passphrase is still in the environment"
        );
        assert_eq!(source.read().unwrap().expose(), b"correct horse");
    }
}
