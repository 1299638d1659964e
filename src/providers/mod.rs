//! Providers describe what should be routed; they never touch the hot path.
//! Each sends its whole current state to the publisher (see
//! [`crate::routes::publish`]).

pub mod docker;
pub mod file;
pub mod labels;
