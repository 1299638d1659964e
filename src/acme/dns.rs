//! DNS-01 solvers (being written).
