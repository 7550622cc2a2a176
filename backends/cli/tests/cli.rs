//! The command-line contracts of `meshkitd check-config`, `meshctl certs init` and `meshctl
//! tokens keygen|issue` (their `--json` included).

use std::process::{Command, Output};

use meshkit_testkit::fixtures::{TempDir, write_config};

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .expect("the binary runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Makes certificates with `meshctl certs init` and writes a valid `node-1.toml`.
fn valid_setup(dir: &TempDir) -> std::path::PathBuf {
    let certs = dir.path().join("certs");
    let out = run(
        env!("CARGO_BIN_EXE_meshctl"),
        &[
            "certs",
            "init",
            "--out",
            certs.to_str().unwrap(),
            "--nodes",
            "2",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    for file in [
        "ca.pem",
        "node-1.pem",
        "node-1.key",
        "node-2.pem",
        "node-2.key",
        "meshctl-admin.pem",
        "meshctl-admin.key",
        "meshctl-operator.pem",
        "meshctl-observer.key",
        "token-signing.key",
        "token-signing.pub",
    ] {
        assert!(certs.join(file).is_file(), "{file} missing");
    }
    write_config(
        dir.path(),
        1,
        &[],
        &certs.join("node-1.pem"),
        &certs.join("node-1.key"),
        &certs.join("ca.pem"),
    )
}

#[test]
fn check_config_accepts_a_good_file() {
    let dir = TempDir::new("cli-good");
    let path = valid_setup(&dir);
    let out = run(
        env!("CARGO_BIN_EXE_meshkitd"),
        &["check-config", path.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn check_config_names_the_bad_key() {
    let dir = TempDir::new("cli-bad");
    let good = std::fs::read_to_string(valid_setup(&dir)).unwrap();
    let cases = [
        // An unknown key: named, with the allowed ones.
        (
            good.replacen("profile =", "colour = 1\nprofile =", 1),
            "colour",
        ),
        (
            good.replacen("profile = \"lan\"", "profile = \"fast\"", 1),
            "profile",
        ),
        (
            good.replacen("seeds = []", "seeds = [\"two@127.0.0.1:1\"]", 1),
            "seeds[0]",
        ),
        (
            good.replacen("listen = \"127.0.0.1:0\"", "listen = \"localhost\"", 1),
            "listen",
        ),
        (
            good.replacen("probe_interval = \"400ms\"", "probe_interval = \"1ns\"", 1),
            "probe_interval",
        ),
        // The certificate of node-1 under id 2.
        (good.replacen("id = 1", "id = 2", 1), "id"),
        // [access]: an unknown scope, and a private key where the public one belongs.
        (
            good.replacen("[access]\n", "[access]\nnodes = [\"mesh.root\"]\n", 1),
            "access.nodes[0]",
        ),
        (
            good.replacen("token-signing.pub", "token-signing.key", 1),
            "access.token_key",
        ),
        // Security review: what start failed on and check-config passed.
        (
            good.replacen(
                "listen = \"127.0.0.1:0\"\ncontrol = \"127.0.0.1:0\"",
                "listen = \"127.0.0.1:17001\"\ncontrol = \"127.0.0.1:17001\"",
                1,
            ),
            "key `control`",
        ),
        (
            good.replacen("seeds = []", "seeds = [\"0@127.0.0.1:1\"]", 1),
            "seeds[0]",
        ),
        (
            good.replacen(
                "seeds = []",
                "seeds = [\"2@127.0.0.1:1\", \"2@127.0.0.1:2\"]",
                1,
            ),
            "seeds[1]",
        ),
        (
            good.replacen("[access]\n", "[access]\naudit_log = \"certs\"\n", 1),
            "access.audit_log",
        ),
        (
            good.replacen(
                "[access]\n",
                "[access]\naudit_log = \"/proc/meshkit-audit.jsonl\"\n",
                1,
            ),
            "access.audit_log",
        ),
        (
            format!("{good}\n[leadership]\nvoters = [1]\ndata_dir = \"/proc/meshkit-raft\"\n"),
            "leadership.data_dir",
        ),
        (
            good.replacen(
                "[access]\n",
                "[access]\ntoken_max_lifetime = \"100000h\"\n",
                1,
            ),
            "access.token_max_lifetime",
        ),
    ];
    for (i, (text, key)) in cases.iter().enumerate() {
        assert_ne!(text, &good, "case {i} did not change the file");
        let path = dir.path().join(format!("bad-{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let out = run(
            env!("CARGO_BIN_EXE_meshkitd"),
            &["check-config", path.to_str().unwrap()],
        );
        assert!(!out.status.success(), "case {i} ({key}) accepted");
        assert!(
            stderr(&out).contains(key),
            "case {i}: {key:?} not named in: {}",
            stderr(&out)
        );
    }
    let unknown = dir.path().join("bad-0.toml");
    let out = run(
        env!("CARGO_BIN_EXE_meshkitd"),
        &["check-config", unknown.to_str().unwrap()],
    );
    assert!(stderr(&out).contains("expected one of"), "{}", stderr(&out));
}

/// A certificate/key mismatch said only `KeyMismatch`, and a key path holding a certificate
/// `no items found`: both now name the files, and say what is wrong.
#[test]
fn check_config_tls_errors_name_the_files() {
    let dir = TempDir::new("cli-tls");
    let good = std::fs::read_to_string(valid_setup(&dir)).unwrap();
    let cases = [
        (
            good.replacen("node-1.key", "node-2.key", 1),
            vec!["node-1.pem", "node-2.key", "does not match"],
        ),
        (
            good.replacen("node-1.key", "node-1.pem", 1),
            vec!["node-1.pem", "holds a certificate, not a private key"],
        ),
    ];
    for (i, (text, says)) in cases.iter().enumerate() {
        assert_ne!(text, &good, "case {i} did not change the file");
        let path = dir.path().join(format!("tls-{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let out = run(
            env!("CARGO_BIN_EXE_meshkitd"),
            &["check-config", path.to_str().unwrap()],
        );
        assert!(!out.status.success(), "case {i} accepted");
        for words in says {
            assert!(
                stderr(&out).contains(words),
                "case {i}: {words:?} not in: {}",
                stderr(&out)
            );
        }
    }
}

#[test]
fn tokens_issue_signs_what_the_public_key_verifies() {
    let dir = TempDir::new("cli-tokens");
    let keys = dir.path().join("keys");
    let out = run(
        env!("CARGO_BIN_EXE_meshctl"),
        &["tokens", "keygen", "--out", keys.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let key = keys.join("token-signing.key");
    let issue = |scope: &str, ttl: &str| {
        run(
            env!("CARGO_BIN_EXE_meshctl"),
            &[
                "tokens",
                "issue",
                "--key",
                key.to_str().unwrap(),
                "--subject",
                "alice",
                "--scope",
                scope,
                "--ttl",
                ttl,
            ],
        )
    };
    let out = issue("mesh.operate", "1h");
    assert!(out.status.success(), "{}", stderr(&out));
    let token = String::from_utf8(out.stdout).unwrap();
    let verifier =
        meshkit_node::tokens::TokenVerifier::from_pem_file(&keys.join("token-signing.pub"))
            .unwrap();
    let verified = verifier
        .verify(token.trim(), std::time::SystemTime::now())
        .unwrap();
    assert_eq!(verified.subject, "alice");
    assert_eq!(verified.scopes.to_claim(), "mesh.operate");

    let out = issue("mesh.root", "1h");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("mesh.observe, mesh.operate or mesh.admin"),
        "{}",
        stderr(&out)
    );
    let out = issue("mesh.observe", "100000h");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("lifetime"), "{}", stderr(&out));
}

/// The commands that work on local files print what they wrote as JSON with `--json`, as every
/// other meshctl command does: paths that exist, and a token that verifies.
#[test]
fn certs_and_tokens_print_json_with_json() {
    let dir = TempDir::new("cli-json");
    let json = |args: &[&str]| -> serde_json::Value {
        let out = run(env!("CARGO_BIN_EXE_meshctl"), args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    };
    let certs = dir.path().join("certs");
    let init = json(&[
        "certs",
        "init",
        "--out",
        certs.to_str().unwrap(),
        "--nodes",
        "2",
        "--json",
    ]);
    let exists = |v: &serde_json::Value| {
        let path = v.as_str().unwrap_or_else(|| panic!("a path: {v}"));
        assert!(std::path::Path::new(path).is_file(), "{path}");
    };
    exists(&init["ca"]);
    assert_eq!(init["nodes"].as_array().map(Vec::len), Some(2), "{init}");
    for pair in init["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .chain(init["clients"].as_array().unwrap())
    {
        exists(&pair["cert"]);
        exists(&pair["key"]);
    }
    assert_eq!(init["clients"].as_array().map(Vec::len), Some(3), "{init}");
    // Each node's expired stand-in for certificate-expiry drills: it loads as one.
    assert_eq!(
        init["expired_stand_ins"].as_array().map(Vec::len),
        Some(2),
        "{init}"
    );
    for pair in init["expired_stand_ins"].as_array().unwrap() {
        exists(&pair["cert"]);
        exists(&pair["key"]);
    }
    exists(&init["token_signing"]["public"]);

    let keys = dir.path().join("keys");
    let keygen = json(&[
        "tokens",
        "keygen",
        "--out",
        keys.to_str().unwrap(),
        "--json",
    ]);
    exists(&keygen["private"]);
    exists(&keygen["public"]);
    let issued = json(&[
        "tokens",
        "issue",
        "--key",
        keygen["private"].as_str().unwrap(),
        "--subject",
        "bob",
        "--scope",
        "mesh.observe",
        "--ttl",
        "1h",
        "--json",
    ]);
    assert_eq!(issued["subject"], "bob", "{issued}");
    assert_eq!(issued["scope"], "mesh.observe", "{issued}");
    let verifier = meshkit_node::tokens::TokenVerifier::from_pem_file(std::path::Path::new(
        keygen["public"].as_str().unwrap(),
    ))
    .unwrap();
    let verified = verifier
        .verify(
            issued["token"].as_str().unwrap(),
            std::time::SystemTime::now(),
        )
        .unwrap();
    assert_eq!(verified.subject, "bob");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expires = issued["expires_unix"].as_u64().unwrap();
    assert!((now + 3590..=now + 3610).contains(&expires), "{issued}");
}

/// The first `lines` lines `meshkitd --config FILE ARGS` writes to stderr (bounded: 20 s), then
/// the process is killed.
fn first_log_lines(dir: &TempDir, args: &[&str], lines: usize) -> Vec<String> {
    use std::io::{BufRead as _, BufReader};
    let config = valid_setup(dir);
    let mut child = Command::new(env!("CARGO_BIN_EXE_meshkitd"))
        .arg("--config")
        .arg(&config)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("meshkitd starts");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut out = Vec::new();
    while out.len() < lines
        && let Some(left) = deadline.checked_duration_since(std::time::Instant::now())
        && let Ok(line) = rx.recv_timeout(left)
    {
        out.push(line);
    }
    let _ = child.kill();
    let _ = child.wait();
    out
}

#[test]
fn logs_are_plain_text_off_a_terminal_and_json_on_request() {
    let dir = TempDir::new("cli-logs-text");
    let text = first_log_lines(&dir, &[], 1);
    assert_eq!(text.len(), 1, "meshkitd logged nothing");
    assert!(
        text.iter().all(|l| !l.contains('\u{1b}')),
        "no colour codes in a pipe: {text:?}"
    );
    assert!(text[0].contains("INFO"), "{text:?}");

    let dir = TempDir::new("cli-logs-json");
    let json = first_log_lines(&dir, &["--log-format", "json"], 1);
    assert_eq!(json.len(), 1, "meshkitd logged nothing: {json:?}");
    for line in &json {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?} is not JSON: {e}"));
        assert!(
            value["level"].is_string() && value["fields"].is_object(),
            "{value}"
        );
    }
}

/// One file for every pod of a StatefulSet: `--id-from-hostname` fills `{id}` from the pod's
/// ordinal (pod `meshkit-1` is node 2 with the default offset) and `{hostname}` from its name;
/// without the flag the file is refused naming it; a name without an ordinal is refused.
#[test]
fn id_from_hostname_fills_the_placeholders() {
    let dir = TempDir::new("cli-hostname");
    let good = std::fs::read_to_string(valid_setup(&dir)).unwrap();
    let shared = good
        .replacen("id = 1", "id = {id}", 1)
        .replace("node-1.pem", "node-{id}.pem")
        .replace("node-1.key", "node-{id}.key");
    assert_ne!(shared, good, "the setup's file names node-1's files");
    let path = dir.path().join("shared.toml");
    std::fs::write(&path, shared).unwrap();
    let check = |hostname: &str, flag: &[&str]| {
        let mut args = vec!["check-config", path.to_str().unwrap()];
        args.extend_from_slice(flag);
        Command::new(env!("CARGO_BIN_EXE_meshkitd"))
            .args(&args)
            .env("HOSTNAME", hostname)
            .output()
            .expect("meshkitd runs")
    };
    let out = check("meshkit-1", &["--id-from-hostname"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("node-2"),
        "{out:?}"
    );
    // Offset 0: pod meshkit-1 is node 1, whose files exist too.
    let out = check("meshkit-1", &["--id-from-hostname=0"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("node-1"),
        "{out:?}"
    );
    let out = check("meshkit-1", &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--id-from-hostname"),
        "{}",
        stderr(&out)
    );
    let out = check("meshkit", &["--id-from-hostname"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("\"meshkit\""), "{}", stderr(&out));
}
