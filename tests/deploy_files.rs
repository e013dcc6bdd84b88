//! The files under deploy/ use only flags and environment variables that zcdp has: a renamed flag
//! must not leave a unit file that fails at start on a customer's host.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_zcdp")).args(args).arg("--help").output().expect("run zcdp --help");
    assert!(out.status.success(), "zcdp {args:?} --help failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("help is UTF-8")
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read deploy/") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// Words of `text` that look like `ZCDP_SOMETHING`.
fn env_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("ZCDP_") {
        let tail = &rest[i..];
        let end = tail.find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')).unwrap_or(tail.len());
        // `ZCDP_*` in prose names the family, not a variable.
        if end > "ZCDP_".len() && !tail[..end].ends_with('_') {
            names.insert(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
    names
}

#[test]
fn every_flag_and_variable_in_deploy_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let mut paths = Vec::new();
    files(&root, &mut paths);
    assert!(paths.iter().any(|p| p.extension().is_some_and(|e| e == "service")), "deploy/ has systemd units");

    let roles: [&[&str]; 9] = [
        &["up"],
        &["ingest"],
        &["process"],
        &["serve"],
        &["sink"],
        &["zalo-sim"],
        &["audiences", "sync"],
        &["topics", "create"],
        &["simulate"],
    ];
    let known_env: String = roles.iter().map(|r| help(r)).collect();
    let mut checked = 0;
    for path in &paths {
        let text = std::fs::read_to_string(path).expect("deploy files are text");
        for name in env_names(&text) {
            // Secrets' values are hidden in --help: `[env: NAME]` instead of `[env: NAME=…]`.
            let known = known_env.contains(&format!("[env: {name}=")) || known_env.contains(&format!("[env: {name}]"));
            assert!(known, "{}: {name} is not a zcdp variable", path.display());
            checked += 1;
        }
        for line in text.lines().filter_map(|l| l.trim().strip_prefix("ExecStart=")) {
            let words: Vec<&str> = line.split_whitespace().collect();
            assert!(words.first().is_some_and(|w| w.ends_with("/zcdp")), "{}: ExecStart runs zcdp: {line}", path.display());
            let role: Vec<&str> = words[1..].iter().take_while(|w| !w.starts_with('-')).copied().collect();
            let role_help = help(&role);
            for flag in words.iter().filter(|w| w.starts_with("--")) {
                let flag = flag.split('=').next().unwrap_or(flag);
                assert!(role_help.contains(&format!("{flag} ")), "{}: zcdp {} has no {flag}", path.display(), role.join(" "));
                checked += 1;
            }
        }
    }
    assert!(checked > 10, "only {checked} flags and variables found: is the parsing right?");
}

/// Every sequence in a YAML/JSON value that is a `zcdp` command line: `["zcdp", role…, flags…]`.
fn zcdp_commands(v: &serde_yaml::Value, out: &mut Vec<Vec<String>>) {
    match v {
        serde_yaml::Value::Sequence(items) => {
            let words: Vec<String> = items.iter().filter_map(|i| i.as_str().map(str::to_string)).collect();
            if words.len() == items.len() && words.first().is_some_and(|w| w == "zcdp" || w.ends_with("/zcdp")) {
                out.push(words);
            }
            items.iter().for_each(|i| zcdp_commands(i, out));
        }
        serde_yaml::Value::Mapping(m) => m.values().for_each(|i| zcdp_commands(i, out)),
        serde_yaml::Value::Tagged(t) => zcdp_commands(&t.value, out),
        _ => {}
    }
}

fn yaml_documents(path: &Path) -> Vec<serde_yaml::Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap_or_else(|e| panic!("{}: not YAML: {e}", path.display())))
        .collect()
}

/// The compose file, the Kubernetes manifests, Prometheus' and Grafana's files all parse; every
/// `zcdp` command in them names a real role with real flags; the dashboard's metrics exist.
#[test]
fn compose_kubernetes_and_dashboards_parse_and_use_real_flags_and_metrics() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let mut paths = Vec::new();
    files(&root, &mut paths);
    let mut commands = Vec::new();
    let mut docs: Vec<(PathBuf, serde_yaml::Value)> = Vec::new();
    for path in &paths {
        match path.extension().and_then(|e| e.to_str()) {
            Some("yml" | "yaml") => {
                for d in yaml_documents(path) {
                    let mut found = Vec::new();
                    zcdp_commands(&d, &mut found);
                    commands.extend(found.into_iter().map(|c| (path.clone(), c)));
                    docs.push((path.clone(), d));
                }
            }
            Some("json") => {
                let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap())
                    .unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()));
                docs.push((path.clone(), serde_yaml::to_value(&v).unwrap()));
            }
            _ => {}
        }
    }
    for (path, words) in &commands {
        let role: Vec<&str> = words[1..].iter().take_while(|w| !w.starts_with('-')).map(String::as_str).collect();
        let role_help = help(&role);
        for flag in words.iter().filter(|w| w.starts_with("--")) {
            let flag = flag.split('=').next().unwrap();
            assert!(role_help.contains(&format!("{flag} ")), "{}: zcdp {} has no {flag}", path.display(), role.join(" "));
        }
    }
    let roles: BTreeSet<String> =
        commands.iter().map(|(_, w)| w[1..].iter().take_while(|w| !w.starts_with('-')).cloned().collect::<Vec<_>>().join(" ")).collect();
    for role in ["ingest", "process", "sink", "serve", "topics create", "zalo-sim"] {
        assert!(roles.contains(role), "no deploy file runs zcdp {role}: {roles:?}");
    }

    // Compose: three KRaft brokers, two gateways, three processor members, a sink, a query server,
    // Prometheus and Grafana.
    let compose = &docs.iter().find(|(p, _)| p.ends_with("compose/docker-compose.yml")).expect("the compose file").1;
    let services = compose["services"].as_mapping().expect("services");
    let count = |pred: &dyn Fn(&serde_yaml::Value) -> bool| services.values().filter(|s| pred(s)).count();
    let runs =
        |s: &serde_yaml::Value, role: &str| s["command"].as_sequence().is_some_and(|c| c.get(1).and_then(|r| r.as_str()) == Some(role));
    let brokers: Vec<&str> = services.keys().filter_map(|k| k.as_str()).filter(|k| k.starts_with("kafka-")).collect();
    assert_eq!(brokers.len(), 3);
    let text = std::fs::read_to_string(root.join("compose/docker-compose.yml")).unwrap();
    assert!(text.contains("image: apache/kafka:") && text.contains("KAFKA_PROCESS_ROLES: broker,controller"), "KRaft mode");
    assert!(!text.to_lowercase().contains("zookeeper"));
    assert_eq!(count(&|s| runs(s, "ingest")), 2);
    assert_eq!(count(&|s| runs(s, "process")), 3);
    assert_eq!(count(&|s| runs(s, "sink")), 1);
    assert_eq!(count(&|s| runs(s, "serve")), 1);
    assert!(services.contains_key("prometheus") && services.contains_key("grafana"));

    // Kubernetes: processors a StatefulSet with a volume per pod and the pod name as the instance
    // id; gateways and query servers Deployments with probes; every container asks for resources.
    let k8s: Vec<&serde_yaml::Value> =
        docs.iter().filter(|(p, _)| p.parent().is_some_and(|d| d.ends_with("k8s"))).map(|(_, d)| d).collect();
    let kind = |k: &str, name: &str| {
        *k8s.iter()
            .find(|d| d["kind"].as_str() == Some(k) && d["metadata"]["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("{k} {name}"))
    };
    let sts = kind("StatefulSet", "zcdp-process");
    assert!(sts["spec"]["volumeClaimTemplates"].as_sequence().is_some_and(|v| !v.is_empty()));
    let env = &sts["spec"]["template"]["spec"]["containers"][0]["env"];
    assert!(
        env.as_sequence()
            .unwrap()
            .iter()
            .any(|e| e["name"].as_str() == Some("ZCDP_INSTANCE_ID")
                && e["valueFrom"]["fieldRef"]["fieldPath"].as_str() == Some("metadata.name")),
        "the pod name is the instance id"
    );
    for name in ["zcdp-ingest", "zcdp-serve"] {
        let c = &kind("Deployment", name)["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["readinessProbe"]["httpGet"]["path"].as_str(), Some("/readyz"), "{name}");
        assert_eq!(c["livenessProbe"]["httpGet"]["path"].as_str(), Some("/healthz"), "{name}");
    }
    for d in &k8s {
        for c in d["spec"]["template"]["spec"]["containers"].as_sequence().into_iter().flatten() {
            assert!(
                c["resources"]["requests"].as_mapping().is_some(),
                "{} has no resource requests",
                d["metadata"]["name"].as_str().unwrap()
            );
        }
    }
    let scaled = kind("ScaledObject", "zcdp-process");
    assert_eq!(scaled["spec"]["triggers"][0]["type"].as_str(), Some("kafka"), "processors scale on consumer lag");
    assert_eq!(scaled["spec"]["triggers"][0]["metadata"]["consumerGroup"].as_str(), Some("zcdp-cdp"));

    // The dashboard's queries use metrics zcdp has.
    let dashboard = std::fs::read_to_string(root.join("grafana/dashboards/zcdp.json")).unwrap();
    let mut sources = String::new();
    for dir in ["ingest/src", "processors/src", "sinks/src", "src"] {
        let mut rs = Vec::new();
        files(&Path::new(env!("CARGO_MANIFEST_DIR")).join(dir), &mut rs);
        for f in rs.iter().filter(|f| f.extension().is_some_and(|e| e == "rs")) {
            sources.push_str(&std::fs::read_to_string(f).unwrap());
        }
    }
    let mut metrics = BTreeSet::new();
    let mut rest = dashboard.as_str();
    while let Some(i) = rest.find("zcdp_") {
        let tail = &rest[i..];
        let end = tail.find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')).unwrap_or(tail.len());
        metrics.insert(tail[..end].trim_end_matches("_bucket").to_string());
        rest = &tail[end..];
    }
    assert!(metrics.len() > 15, "{metrics:?}");
    for m in &metrics {
        assert!(sources.contains(&format!("\"{m}\"")), "the dashboard uses {m}, which zcdp does not export");
    }
}
