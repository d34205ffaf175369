//! End-to-end tests of the `flowlake` binary.

mod gen_cli;
