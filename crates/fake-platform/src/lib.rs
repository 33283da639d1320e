//! Fake platform servers for edgecap's tests, examples and benchmarks: real HTTP servers on
//! 127.0.0.1 implementing the wire contracts in `docs/protocols/` (never a mocked client).
//! Each records what it sees so a test can assert on the wire behaviour, and has switchable
//! faults. Dev-only: the edgecap binary never links it.

pub mod nexus;
pub mod picsellia;
