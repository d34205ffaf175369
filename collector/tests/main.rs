//! Integration tests of flowlake-collector (one binary, one module per area).

mod datapath;
mod enrich;
mod plugins;
mod retina;
mod ship;
mod sink;
