//! A test that fails on request, so that `./test selfcheck` can prove the
//! test runner goes red when a cargo test fails (or does not compile).

// With PORTNODE_SELFCHECK_BROKEN set at build time, this file does not
// compile (cargo rebuilds only this test when the variable changes).
const _: () = assert!(option_env!("PORTNODE_SELFCHECK_BROKEN").is_none(), "PORTNODE_SELFCHECK_BROKEN: this build fails on purpose");

#[test]
fn selfcheck_fails_on_request() {
    assert!(
        std::env::var_os("PORTNODE_SELFCHECK_FAIL").is_none(),
        "PORTNODE_SELFCHECK_FAIL is set: this test fails on purpose"
    );
}
