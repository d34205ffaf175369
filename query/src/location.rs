//! Where the Delta table lives: the flags shared by every role and the plain location
//! behind them, from the storage crate (a leaf module: no other module of the crate).

pub use flowlake_storage::{TableArgs, TableLocation, parse_key_value};
