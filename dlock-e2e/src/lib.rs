//! End-to-end tests of the dlock facade live in `tests/`; this crate has no API.
#![forbid(unsafe_code)]
