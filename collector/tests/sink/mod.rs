//! The sinks against real receivers: the same generated records through the
//! ingester, IPFIX and JSON-lines sinks at once, read back by a protocol-faithful
//! ingester, Debian's nfcapd/nfdump and DuckDB.

mod receivers;
mod three_sinks;
