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
