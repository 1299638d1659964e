//! Code layout for the release binary.
//!
//! A fat-LTO build puts ~8 MiB of machine code in one `.text`, and the kernel
//! maps it in 64 KiB fault-around windows: start-up code and the request path
//! were spread over the whole section, so most of it stayed resident although
//! a request runs ~1 MiB of it. `link/symbol-order.txt` (written by
//! `scripts/symbol-order.sh` from callgrind profiles) lists the functions a
//! proxied request runs, then those start-up runs; LLD lays them out first and
//! in that order, so the pages they share are few and stay together.
//!
//! Only for release builds of the `x86_64-unknown-linux-gnu` binary, which
//! rustc links with its own LLD since 1.90 (`rust-version`); GNU ld and the
//! musl target's default linker know no ordering file. Names the binary does
//! not define (the list went stale) are skipped by LLD without a warning;
//! `scripts/symbol-order.sh --check` says how much of the list still applies.
//! `BRANCHGATE_SYMBOL_ORDER=off` builds without it.

use std::env;
use std::path::Path;

const ORDER_FILE: &str = "link/symbol-order.txt";

fn main() {
    println!("cargo:rerun-if-changed={ORDER_FILE}");
    println!("cargo:rerun-if-env-changed=BRANCHGATE_SYMBOL_ORDER");
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER");

    let target = env::var("TARGET").unwrap_or_default();
    let release = env::var("PROFILE").is_ok_and(|p| p == "release");
    let disabled = env::var("BRANCHGATE_SYMBOL_ORDER").is_ok_and(|v| v == "off");
    // Another linker named for the target may be GNU ld, which refuses the flag.
    let own_linker = env::var_os("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER").is_some();
    if target != "x86_64-unknown-linux-gnu" || !release || disabled || own_linker {
        return;
    }
    let manifest = env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let order = Path::new(&manifest).join(ORDER_FILE);
    if !order.is_file() {
        return;
    }
    println!(
        "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
        order.display()
    );
    println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
}
