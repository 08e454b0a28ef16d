//! The Kubernetes manifests in deploy/k8s agree with the node configs they
//! mount: names and certificate SANs, ports, mount paths, probe paths, and
//! the hardening every signer pod must have. There is no cluster here, so
//! this reads the manifests as a kube-apiserver would see them and checks
//! them against the code that parses the config and issues certificates.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use thresig::config::{NodeConfig, PassphraseSource};
use thresig::domain::HostPort;
use yaml_rust2::{Yaml, YamlLoader};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/k8s");

struct Manifests {
    /// (file, document), every document of every file.
    docs: Vec<(String, Yaml)>,
}

impl Manifests {
    fn load() -> Self {
        let mut docs = Vec::new();
        let mut files: Vec<_> = std::fs::read_dir(DIR)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        files.sort();
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            for d in YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}")) {
                docs.push((name.clone(), d));
            }
        }
        Self { docs }
    }

    fn of_kind(&self, kind: &str) -> Vec<&Yaml> {
        self.docs
            .iter()
            .filter(|(_, d)| d["kind"].as_str() == Some(kind))
            .map(|(_, d)| d)
            .collect()
    }

    fn named(&self, kind: &str, name: &str) -> &Yaml {
        let found: Vec<_> = self
            .of_kind(kind)
            .into_iter()
            .filter(|d| d["metadata"]["name"].as_str() == Some(name))
            .collect();
        assert_eq!(found.len(), 1, "exactly one {kind} named {name}");
        found[0]
    }
}

fn s(y: &Yaml) -> &str {
    y.as_str()
        .unwrap_or_else(|| panic!("expected a string, got {y:?}"))
}

fn list(y: &Yaml) -> &[Yaml] {
    y.as_vec().map(Vec::as_slice).unwrap_or(&[])
}

fn labels(y: &Yaml) -> BTreeMap<String, String> {
    y.as_hash()
        .map(|h| {
            h.iter()
                .map(|(k, v)| (s(k).to_owned(), s(v).to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a `matchLabels` selector selects a pod with `pod` labels.
fn selects(selector: &Yaml, pod: &BTreeMap<String, String>) -> bool {
    let want = labels(selector);
    !want.is_empty() && want.iter().all(|(k, v)| pod.get(k) == Some(v))
}

/// A container port by name or number.
fn port_of(container: &Yaml, port: &Yaml) -> u16 {
    if let Some(n) = port.as_i64() {
        return u16::try_from(n).unwrap();
    }
    let name = s(port);
    let p = list(&container["ports"])
        .iter()
        .find(|p| p["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("the container has no port named {name}"));
    u16::try_from(p["containerPort"].as_i64().unwrap()).unwrap()
}

/// One signer: its StatefulSet, the container, and the config it mounts.
struct Signer<'a> {
    set: &'a Yaml,
    container: &'a Yaml,
    cfg: NodeConfig,
    config_path: PathBuf,
}

impl<'a> Signer<'a> {
    fn of(m: &'a Manifests, set: &'a Yaml) -> Self {
        let pod = &set["spec"]["template"]["spec"];
        let containers = list(&pod["containers"]);
        assert_eq!(containers.len(), 1, "one container per signer pod");
        let container = &containers[0];
        let args: Vec<&str> = list(&container["args"]).iter().map(s).collect();
        let at = args
            .iter()
            .position(|a| *a == "--config")
            .expect("the container is started with --config");
        let config_path = PathBuf::from(args[at + 1]);
        let (volume, rel) = mounted(set, container, &config_path);
        let cm = m.named("ConfigMap", s(&volume["configMap"]["name"]));
        let text = s(&cm["data"][rel.to_str().unwrap()]);
        let cfg = NodeConfig::parse(text, config_path.parent().unwrap())
            .unwrap_or_else(|e| panic!("the config in {}: {e}", config_path.display()));
        Self {
            set,
            container,
            cfg,
            config_path,
        }
    }

    fn pod_labels(&self) -> BTreeMap<String, String> {
        labels(&self.set["spec"]["template"]["metadata"]["labels"])
    }
}

/// The volume that holds `path` in `container`, and the path inside it; the
/// path must exist in the volume (a key of its ConfigMap, an item of its
/// Secret) unless the volume is a claim.
fn mounted<'a>(set: &'a Yaml, container: &Yaml, path: &Path) -> (&'a Yaml, PathBuf) {
    let mount = list(&container["volumeMounts"])
        .iter()
        .filter(|v| path.starts_with(s(&v["mountPath"])))
        .max_by_key(|v| s(&v["mountPath"]).len())
        .unwrap_or_else(|| panic!("nothing is mounted at {}", path.display()));
    let name = s(&mount["name"]);
    let rel = path
        .strip_prefix(s(&mount["mountPath"]))
        .unwrap()
        .to_owned();
    let pod = &set["spec"]["template"]["spec"];
    if let Some(v) = list(&pod["volumes"])
        .iter()
        .find(|v| v["name"].as_str() == Some(name))
    {
        if let Some(items) = v["secret"]["items"].as_vec() {
            assert!(
                items.iter().any(|i| Path::new(s(&i["path"])) == rel),
                "{} is not an item of the Secret mounted at {}",
                rel.display(),
                s(&mount["mountPath"])
            );
        }
        assert_eq!(
            mount["readOnly"].as_bool(),
            Some(true),
            "{name} is mounted read-only"
        );
        return (v, rel);
    }
    let claim = list(&set["spec"]["volumeClaimTemplates"])
        .iter()
        .find(|c| c["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("volume {name} is neither a pod volume nor a claim"));
    (claim, rel)
}

fn signers(m: &Manifests) -> Vec<Signer<'_>> {
    let sets = m.of_kind("StatefulSet");
    assert!(sets.len() >= 2, "one StatefulSet per signer node");
    sets.into_iter().map(|set| Signer::of(m, set)).collect()
}

#[test]
fn every_signer_is_a_one_replica_statefulset_named_for_its_node_with_a_matching_headless_service() {
    let m = Manifests::load();
    let all = signers(&m);
    let names: Vec<String> = all.iter().map(|n| n.cfg.name.to_string()).collect();
    for n in &all {
        let name = n.cfg.name.as_str();
        assert_eq!(
            n.set["spec"]["replicas"].as_i64(),
            Some(1),
            "{name}: one replica"
        );
        // The Service's name is the node name: the DNS name peers dial and
        // the name its certificate must carry.
        let svc = m.named("Service", s(&n.set["spec"]["serviceName"]));
        assert_eq!(
            s(&svc["metadata"]["name"]),
            name,
            "{name}: the Service is named for the node"
        );
        assert_eq!(s(&svc["spec"]["clusterIP"]), "None", "{name}: headless");
        assert_eq!(
            svc["spec"]["publishNotReadyAddresses"].as_bool(),
            Some(true),
            "{name}: peers reach a node before it is ready"
        );
        assert!(
            selects(&svc["spec"]["selector"], &n.pod_labels()),
            "{name}: the Service selects the pod"
        );
        for other in all.iter().filter(|o| o.cfg.name != n.cfg.name) {
            assert!(
                !selects(&svc["spec"]["selector"], &other.pod_labels()),
                "{name}'s Service also selects {}",
                other.cfg.name
            );
        }
        // Every node lists the same roster.
        let roster: Vec<String> = n.cfg.peers.iter().map(|p| p.name.to_string()).collect();
        assert_eq!(
            roster, names,
            "{name}: the roster is the set of StatefulSets"
        );
    }
}

#[test]
fn certificates_issued_for_the_nodes_carry_the_names_peers_dial() {
    let m = Manifests::load();
    let all = signers(&m);
    let trust_domain = all[0].cfg.trust_domain.clone();
    let (ca, _) = thresig::pki::Ca::generate(&trust_domain).unwrap();
    for n in &all {
        assert_eq!(n.cfg.trust_domain, trust_domain, "one trust domain");
        let issued = ca
            .issue(thresig::pki::Role::Node, n.cfg.name.as_str(), 1)
            .unwrap();
        let (_, pem) = x509_parser::pem::parse_x509_pem(issued.cert_pem.as_bytes()).unwrap();
        let cert = pem.parse_x509().unwrap();
        let dns: Vec<String> = cert
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .filter_map(|g| match g {
                x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
                _ => None,
            })
            .collect();
        for peer in &all {
            // How `n` dials `peer`: the host must be the peer's Service in
            // this namespace, and the TLS name (the node name) a SAN of the
            // certificate `thresig certs init` gives the peer.
            let entry = n
                .cfg
                .peers
                .iter()
                .find(|p| p.name == peer.cfg.name)
                .unwrap();
            let svc_host = service_host(&m, n.set, &entry.peer_addr);
            assert_eq!(
                svc_host,
                peer.cfg.name.as_str(),
                "{} dials {} by its Service",
                n.cfg.name,
                peer.cfg.name
            );
        }
        assert!(
            dns.iter().any(|d| d == n.cfg.name.as_str()),
            "the certificate for {} names it: {dns:?}",
            n.cfg.name
        );
    }
}

/// The Service a peer address names (`svc`, `svc.ns`, `svc.ns.svc` or
/// `svc.ns.svc.cluster.local`, in the StatefulSet's namespace).
fn service_host(m: &Manifests, set: &Yaml, addr: &HostPort) -> String {
    let ns = s(&set["metadata"]["namespace"]);
    let labels: Vec<&str> = addr.host().split('.').collect();
    let svc = labels[0];
    let rest = &labels[1..];
    let ok = rest.is_empty()
        || rest == [ns]
        || rest == [ns, "svc"]
        || rest == [ns, "svc", "cluster", "local"];
    assert!(ok, "{addr} is not a Service name in namespace {ns}");
    let found = m.named("Service", svc);
    assert_eq!(s(&found["metadata"]["namespace"]), ns);
    svc.to_owned()
}

#[test]
fn ports_agree_between_config_container_service_and_peers() {
    let m = Manifests::load();
    let all = signers(&m);
    for n in &all {
        let name = n.cfg.name.as_str();
        let ops = n
            .cfg
            .listen_ops
            .expect("the ops plane listens (probes and metrics)");
        for (port, want) in [
            ("peer", n.cfg.listen_peer.port()),
            ("client", n.cfg.listen_client.port()),
            ("ops", ops.port()),
        ] {
            assert_eq!(
                port_of(n.container, &Yaml::String(port.into())),
                want,
                "{name}: container port {port}"
            );
        }
        for ip in [n.cfg.listen_peer.ip(), n.cfg.listen_client.ip(), ops.ip()] {
            assert!(
                ip.is_unspecified(),
                "{name} listens on {ip}: a pod must listen on all addresses"
            );
        }
    }
    // What every node dials for each peer reaches that peer's listener.
    for n in &all {
        for entry in &n.cfg.peers {
            let peer = all.iter().find(|p| p.cfg.name == entry.name).unwrap();
            let svc = m.named("Service", &service_host(&m, n.set, &entry.peer_addr));
            for (addr, listen) in [
                (&entry.peer_addr, peer.cfg.listen_peer.port()),
                (&entry.client_addr, peer.cfg.listen_client.port()),
            ] {
                let sp = list(&svc["spec"]["ports"])
                    .iter()
                    .find(|p| p["port"].as_i64() == Some(i64::from(addr.port())))
                    .unwrap_or_else(|| {
                        panic!("Service {} has no port {}", entry.name, addr.port())
                    });
                assert_eq!(
                    port_of(peer.container, &sp["targetPort"]),
                    listen,
                    "{} dials {addr}, which must reach {}'s listener",
                    n.cfg.name,
                    entry.name
                );
            }
        }
    }
}

#[test]
fn every_file_the_config_names_is_mounted_where_it_says() {
    let m = Manifests::load();
    let secrets_script = std::fs::read_to_string(Path::new(DIR).join("make-secrets.sh")).unwrap();
    for n in signers(&m) {
        let name = n.cfg.name.as_str();
        let PassphraseSource::File(pass) = &n.cfg.passphrase else {
            panic!("{name}: the passphrase comes from a mounted file");
        };
        for f in [&n.cfg.tls.ca, &n.cfg.tls.cert, &n.cfg.tls.key, pass] {
            let (volume, rel) = mounted(n.set, n.container, f);
            let secret = s(&volume["secret"]["secretName"]);
            assert_eq!(
                secret,
                format!("thresig-{name}"),
                "{name}: {} comes from its own Secret",
                f.display()
            );
            let key = list(&volume["secret"]["items"])
                .iter()
                .find(|i| Path::new(s(&i["path"])) == rel)
                .map(|i| s(&i["key"]))
                .unwrap();
            assert!(
                secrets_script.contains(&format!("--from-file={key}=")),
                "make-secrets.sh puts {key} in the Secret"
            );
        }
        let policy = n.cfg.policy.as_ref().expect("a policy");
        let (volume, rel) = mounted(n.set, n.container, policy);
        let cm = m.named("ConfigMap", s(&volume["configMap"]["name"]));
        let text = s(&cm["data"][rel.to_str().unwrap()]);
        let file =
            std::env::temp_dir().join(format!("k8s-policy-{name}-{}.toml", std::process::id()));
        std::fs::write(&file, text).unwrap();
        let parsed = thresig::node::policy::Policy::load(&file);
        std::fs::remove_file(&file).unwrap();
        parsed.unwrap_or_else(|e| panic!("{name}'s policy: {e}"));
        let (data, rel) = mounted(n.set, n.container, &n.cfg.data_dir);
        assert!(
            data["spec"]["accessModes"].as_vec().is_some(),
            "{name}: the data dir is a claim"
        );
        assert_eq!(
            rel,
            PathBuf::new(),
            "{name}: the data dir is the claim's mount"
        );
        assert!(n.config_path.is_absolute());
    }
}

#[test]
fn probes_hit_the_ops_plane_paths_and_the_pods_are_locked_down() {
    let m = Manifests::load();
    let dockerfile = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/docker/Dockerfile"
    ))
    .unwrap();
    let image_user = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .and_then(|u| u.split(':').next())
        .and_then(|u| u.trim().parse::<i64>().ok())
        .expect("the Dockerfile sets a numeric USER");
    for n in signers(&m) {
        let name = n.cfg.name.as_str();
        let ops = n.cfg.listen_ops.unwrap().port();
        for (probe, path) in [
            ("startupProbe", thresig::api::ops::HEALTHZ),
            ("livenessProbe", thresig::api::ops::HEALTHZ),
            ("readinessProbe", thresig::api::ops::READYZ),
        ] {
            let get = &n.container[probe]["httpGet"];
            assert_eq!(s(&get["path"]), path, "{name}: {probe}");
            assert_eq!(
                port_of(n.container, &get["port"]),
                ops,
                "{name}: {probe} on the ops port"
            );
        }
        let pod = &n.set["spec"]["template"]["spec"];
        let sc = &n.container["securityContext"];
        assert_eq!(
            pod["securityContext"]["runAsNonRoot"].as_bool(),
            Some(true),
            "{name}"
        );
        assert_eq!(
            pod["securityContext"]["runAsUser"].as_i64(),
            Some(image_user),
            "{name}: the image's user"
        );
        assert_eq!(
            s(&pod["securityContext"]["seccompProfile"]["type"]),
            "RuntimeDefault",
            "{name}"
        );
        assert_eq!(sc["runAsNonRoot"].as_bool(), Some(true), "{name}");
        assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true), "{name}");
        assert_eq!(
            sc["allowPrivilegeEscalation"].as_bool(),
            Some(false),
            "{name}"
        );
        assert_eq!(s(&sc["seccompProfile"]["type"]), "RuntimeDefault", "{name}");
        let dropped: Vec<&str> = list(&sc["capabilities"]["drop"]).iter().map(s).collect();
        assert_eq!(dropped, ["ALL"], "{name}: every capability dropped");
        assert!(
            sc["capabilities"]["add"].is_badvalue(),
            "{name}: none added"
        );
        for kind in ["requests", "limits"] {
            for r in ["cpu", "memory"] {
                assert!(
                    !n.container["resources"][kind][r].is_badvalue(),
                    "{name}: resources.{kind}.{r}"
                );
            }
        }
        assert_eq!(
            pod["automountServiceAccountToken"].as_bool(),
            Some(false),
            "{name}: no API token"
        );
    }
}

#[test]
fn network_policy_opens_each_port_only_to_its_callers() {
    let m = Manifests::load();
    let all = signers(&m);
    let policies = m.of_kind("NetworkPolicy");
    assert_eq!(policies.len(), 1);
    let np = policies[0];
    for n in &all {
        assert!(
            selects(&np["spec"]["podSelector"]["matchLabels"], &n.pod_labels()),
            "the policy covers {}",
            n.cfg.name
        );
    }
    let types: Vec<&str> = list(&np["spec"]["policyTypes"]).iter().map(s).collect();
    assert!(
        types.contains(&"Ingress") && types.contains(&"Egress"),
        "{types:?}"
    );
    let cfg = &all[0].cfg;
    let (peer, client, ops) = (
        cfg.listen_peer.port(),
        cfg.listen_client.port(),
        cfg.listen_ops.unwrap().port(),
    );
    let mut opened = Vec::new();
    for rule in list(&np["spec"]["ingress"]) {
        let ports: Vec<u16> = list(&rule["ports"])
            .iter()
            .map(|p| u16::try_from(p["port"].as_i64().unwrap()).unwrap())
            .collect();
        assert_eq!(
            ports.len(),
            1,
            "one port per rule, so each has its own callers: {ports:?}"
        );
        let from = list(&rule["from"]);
        assert!(
            !from.is_empty(),
            "port {} is not open to everyone",
            ports[0]
        );
        for f in from {
            if ports[0] == peer {
                assert!(
                    f["namespaceSelector"].is_badvalue(),
                    "the peer port admits pods, not namespaces"
                );
                for n in &all {
                    assert!(
                        selects(&f["podSelector"]["matchLabels"], &n.pod_labels()),
                        "signer {} may reach the peer port",
                        n.cfg.name
                    );
                }
                assert!(
                    !selects(
                        &f["podSelector"]["matchLabels"],
                        &BTreeMap::from([("app".to_owned(), "other".to_owned())])
                    ),
                    "the peer port admits signer pods only"
                );
            } else if ports[0] == client {
                assert_eq!(
                    labels(&f["namespaceSelector"]["matchLabels"])
                        .get("thresig.io/client")
                        .map(String::as_str),
                    Some("true")
                );
            } else if ports[0] == ops {
                assert_eq!(
                    labels(&f["namespaceSelector"]["matchLabels"])
                        .get("thresig.io/monitoring")
                        .map(String::as_str),
                    Some("true")
                );
            } else {
                panic!(
                    "the policy opens port {}, which no signer listens on",
                    ports[0]
                );
            }
        }
        opened.extend(ports);
    }
    opened.sort_unstable();
    let mut want = vec![peer, client, ops];
    want.sort_unstable();
    assert_eq!(opened, want, "the policy opens exactly the three planes");
}

#[test]
fn the_disruption_budget_never_takes_more_than_n_minus_t_signers_down() {
    let m = Manifests::load();
    let all = signers(&m);
    let pdbs = m.of_kind("PodDisruptionBudget");
    assert_eq!(pdbs.len(), 1);
    let pdb = pdbs[0];
    for n in &all {
        assert!(
            selects(&pdb["spec"]["selector"]["matchLabels"], &n.pod_labels()),
            "the budget covers {}",
            n.cfg.name
        );
    }
    let t: i64 = s(&pdb["metadata"]["annotations"]["thresig.io/threshold"])
        .parse()
        .unwrap();
    let n = i64::try_from(all.len()).unwrap();
    assert!(t >= 2 && t <= n, "threshold {t} of {n}");
    assert_eq!(pdb["spec"]["maxUnavailable"].as_i64(), Some(n - t));
    assert!(pdb["spec"]["minAvailable"].is_badvalue(), "one bound only");
}

#[test]
fn kustomization_lists_every_manifest() {
    let m = Manifests::load();
    let k = m
        .docs
        .iter()
        .find(|(f, _)| f == "kustomization.yaml")
        .map(|(_, d)| d)
        .unwrap();
    let mut listed: Vec<&str> = list(&k["resources"]).iter().map(s).collect();
    listed.sort_unstable();
    let mut files: Vec<&str> = m
        .docs
        .iter()
        .map(|(f, _)| f.as_str())
        .filter(|f| *f != "kustomization.yaml")
        .collect();
    files.sort_unstable();
    files.dedup();
    assert_eq!(listed, files);
    for (f, d) in &m.docs {
        if f != "kustomization.yaml" && d["kind"].as_str() != Some("Namespace") {
            assert_eq!(
                d["metadata"]["namespace"].as_str(),
                Some("thresig"),
                "{f}: {:?}",
                d["metadata"]["name"]
            );
        }
    }
}
