//! (tests to come)

#[allow(unused_imports)]
use super::*;
