//! The test script's own failure paths: what it names when tests fail
//! (`scripts/lib/cargo-failures.awk` on real `cargo test` output of a scratch
//! crate), and `scripts/pgo.sh --check` refusing a profile that cannot match
//! (the threshold path needs the release build: scripts/test.sh checks it).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A crate whose tests fail in each way the list must name: a unit test, two
/// tests of one test binary (one printing lines that look like a list
/// entry), and a binary that crashes before it prints a list.
fn scratch_crate(dir: &Path) {
    let files = [
        (
            "Cargo.toml",
            "[package]\nname = \"scratch\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\n[workspace]\n",
        ),
        (
            "src/lib.rs",
            "#[cfg(test)]\nmod tests {\n    #[test]\n    fn passes() {}\n\n    #[test]\n    fn unit_fails() {\n        panic!(\"unit\");\n    }\n}\n",
        ),
        ("tests/fine.rs", "#[test]\nfn fine() {}\n"),
        (
            "tests/broken.rs",
            "#[test]\nfn passes_too() {}\n\n#[test]\nfn first_fails() {\n    println!(\"    not_a_test_name\");\n    panic!(\"first\");\n}\n\n#[test]\nfn second_fails() {\n    assert_eq!(1, 2);\n}\n",
        ),
        (
            "tests/crash.rs",
            "#[test]\nfn aborts() {\n    std::process::abort();\n}\n",
        ),
    ];
    for (path, text) in files {
        write(&dir.join(path), text);
    }
}

#[test]
fn the_failed_list_names_failed_tests_and_crashed_test_binaries() {
    let dir = tempfile::tempdir().unwrap();
    scratch_crate(dir.path());
    let log = dir.path().join("cargo-test.log");
    // As scripts/test.sh runs it: both streams in one, in order.
    let ran = Command::new("bash")
        .arg("-c")
        .arg("cargo test --offline --no-fail-fast --color never > \"$LOG\" 2>&1")
        .env("LOG", &log)
        .env("CARGO_TARGET_DIR", dir.path().join("target"))
        .env_remove("RUSTFLAGS")
        .current_dir(dir.path())
        .status()
        .unwrap();
    let output = std::fs::read_to_string(&log).unwrap();
    assert!(!ran.success(), "the scratch tests should fail:\n{output}");
    assert!(
        output.contains("test result: FAILED"),
        "the scratch crate did not build and run:\n{output}"
    );

    let listed = Command::new("awk")
        .arg("-f")
        .arg(root().join("scripts/lib/cargo-failures.awk"))
        .arg(&log)
        .output()
        .unwrap();
    assert!(listed.status.success(), "{}", text(&listed));
    let names: BTreeSet<String> = String::from_utf8(listed.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let expected: BTreeSet<String> = [
        "cargo test src/lib.rs: tests::unit_fails",
        "cargo test tests/broken.rs: first_fails",
        "cargo test tests/broken.rs: second_fails",
        "cargo test target failed: `--lib`",
        "cargo test target failed: `--test broken`",
        "cargo test target failed: `--test crash`",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(names, expected, "cargo's output:\n{output}");
}

/// A copy of what `scripts/pgo.sh --check` reads before it builds, with
/// `stamp` as the profile's stamp and `profile` as the profile (none: absent).
fn pgo_root(dir: &Path, stamp: &str, profile: Option<&[u8]>) -> PathBuf {
    let root = root();
    for file in ["scripts/pgo.sh", "scripts/lib/release.sh", "Cargo.lock"] {
        let to = dir.join(file);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(root.join(file), &to).unwrap();
    }
    write(&dir.join("link/pgo.stamp"), stamp);
    if let Some(bytes) = profile {
        std::fs::write(dir.join("link/pgo.profdata"), bytes).unwrap();
    }
    dir.join("scripts/pgo.sh")
}

fn pgo_check(script: &Path) -> Output {
    Command::new("bash")
        .arg(script)
        .arg("--check")
        .env_remove("MIN_PERCENT")
        .env_remove("TARGET")
        .output()
        .unwrap()
}

#[test]
fn the_profile_check_refuses_a_missing_foreign_or_empty_profile() {
    let real_stamp = std::fs::read_to_string(root().join("link/pgo.stamp")).unwrap();

    // Written by another compiler: no name can match; said before any build.
    let dir = tempfile::tempdir().unwrap();
    let script = pgo_root(
        dir.path(),
        "rustc 1.0.0\nLLVM 3.0\nCargo.lock 0000000000000000\n",
        Some(b"a profile"),
    );
    let out = pgo_check(&script);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("written for rustc 1.0.0 LLVM 3.0")
            && said
                .contains("it matches nothing; run TARGET=x86_64-unknown-linux-gnu scripts/pgo.sh"),
        "{said}"
    );

    // No profile at all.
    let dir = tempfile::tempdir().unwrap();
    let out = pgo_check(&pgo_root(dir.path(), &real_stamp, None));
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("link/pgo.profdata is missing"), "{said}");

    // The right stamp over a file that holds none of branchgate's functions.
    let dir = tempfile::tempdir().unwrap();
    let out = pgo_check(&pgo_root(dir.path(), &real_stamp, Some(b"not a profile")));
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("link/pgo.profdata holds none of branchgate's functions"),
        "{said}"
    );
}
