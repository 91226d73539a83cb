//! The `#[redis_retry]` attribute macro. Its implementation lands with the macro issue; the
//! crate exists now so that the workspace layout is final.
