//! The command-line contracts of `meshkitd check-config` and `meshctl certs init`.

mod common;

use std::process::{Command, Output};

use common::{TempDir, write_config};

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
