//! End-to-end tests of the `flowlake` binary.

mod deploy_chart;
mod gen_cli;
mod ingester_crash;
mod pipeline;
mod standalone;
