//! Route lookup benchmarks (filled in below).
fn main() {}
