//! Code layout for the release binary.
//!
//! A fat-LTO build puts ~8 MiB of machine code in one `.text`, and the kernel
//! maps it in 64 KiB fault-around windows: start-up code and the request path
//! were spread over the whole section, so most of it stayed resident although
//! a request runs ~1 MiB of it. `link/symbol-order*.txt` (written by
//! `scripts/symbol-order.sh` from callgrind profiles) lists the functions a
//! proxied request runs, then those start-up runs; LLD lays them out first and
//! in that order, so the pages they share are few and stay together.
//!
//! Release builds only, with LLD: the `x86_64-unknown-linux-gnu` binary is
//! linked by rustc's own LLD since 1.90 (`rust-version`); the image's
//! `x86_64-unknown-linux-musl` binary is linked through `cc`, told here to use
//! the LLD shipped with the toolchain (skipped, with the default layout, where
//! the toolchain has none). Symbol names carry hashes that differ per target,
//! so each target has its list. Names the binary does not define (the list
//! went stale) are skipped by LLD without a warning;
//! `scripts/symbol-order.sh --check` says how much still applies.
//! `BRANCHGATE_SYMBOL_ORDER=off` builds without it.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    for file in ["link/symbol-order.txt", "link/symbol-order-musl.txt"] {
        println!("cargo:rerun-if-changed={file}");
    }
    let target = env::var("TARGET").unwrap_or_default();
    // Another linker named for the target may be GNU ld, which refuses the flag.
    let linker_var = format!(
        "CARGO_TARGET_{}_LINKER",
        target.to_uppercase().replace('-', "_")
    );
    println!("cargo:rerun-if-env-changed=BRANCHGATE_SYMBOL_ORDER");
    println!("cargo:rerun-if-env-changed={linker_var}");

    let release = env::var("PROFILE").is_ok_and(|p| p == "release");
    let disabled = env::var("BRANCHGATE_SYMBOL_ORDER").is_ok_and(|v| v == "off");
    if !release || disabled || env::var_os(&linker_var).is_some() {
        return;
    }
    let (list, lld_dir) = match target.as_str() {
        "x86_64-unknown-linux-gnu" => ("link/symbol-order.txt", None),
        "x86_64-unknown-linux-musl" => match toolchain_lld() {
            Some(dir) => ("link/symbol-order-musl.txt", Some(dir)),
            None => return,
        },
        _ => return,
    };
    let manifest = env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let order = Path::new(&manifest).join(list);
    if !order.is_file() {
        return;
    }
    if let Some(dir) = lld_dir {
        println!("cargo:rustc-link-arg-bins=-B{}", dir.display());
        println!("cargo:rustc-link-arg-bins=-fuse-ld=lld");
    }
    println!(
        "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
        order.display()
    );
    println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
}

/// The directory holding the toolchain's `ld.lld` for `cc -fuse-ld=lld`
/// (what rustc itself passes when it links with its LLD), if there is one.
fn toolchain_lld() -> Option<PathBuf> {
    let rustc = env::var_os("RUSTC")?;
    let host = env::var("HOST").ok()?;
    let out = Command::new(rustc)
        .arg("--print")
        .arg("sysroot")
        .output()
        .ok()?;
    let sysroot = String::from_utf8(out.stdout).ok()?;
    let dir = Path::new(sysroot.trim())
        .join("lib/rustlib")
        .join(host)
        .join("bin/gcc-ld");
    dir.join("ld.lld").is_file().then_some(dir)
}
