//! The chaos soak (issue 13): being written; see tests/soak/README in a later commit.

#[test]
fn soak_placeholder() {}
