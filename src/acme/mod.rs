//! ACME: certificates obtained and renewed by branchgate itself.

pub mod dns;
