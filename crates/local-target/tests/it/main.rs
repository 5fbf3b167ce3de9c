//! local-target's integration tests, against the real Docker engine (which must answer:
//! these tests fail, never skip, without it) and a real `docker-registry` process.

mod local_target;
// The same helpers as host-adapters' tests (the engine, images built FROM scratch, a
// registry): one file, not a copy.
// Not every helper is used here.
#[allow(dead_code, unused_imports)]
#[path = "../../../host-adapters/tests/it/support.rs"]
mod support;
