//! Fuzz the ingest decode path: Content-Encoding, Arrow IPC stream decoding (with
//! IPC-level compression) and flow-schema validation. Anything may be refused;
//! nothing may panic out of `decode_body` or abort, and whatever is accepted
//! conforms to the schema.
//!
//! Input: one byte choosing the Content-Encoding (odd: zstd), then the body.
//! `scripts/fuzz.sh` runs it; seeds are in `fuzz/seeds/ipc_decode/` (made by
//! `cargo run -p flowlake-wire --example fuzz_seeds`). The same property runs
//! deterministically on stable in `wire/src/decode/tests.rs`
//! (`mutated_bodies_never_panic`), with the crashes found here as regressions.
//!
//! Panics inside arrow-ipc are caught by `decode_body` (a 400, `ArrowPanic`);
//! libfuzzer-sys would abort on them before they are caught, so this target
//! installs its own panic hook instead. Each new arrow panic site is printed and
//! its first input saved to `fuzz/artifacts/ipc_decode/arrow-panics/`, to be
//! guarded in `wire/src/guard.rs` and friends. Uncaught panics still abort
//! (libfuzzer-sys aborts when one leaves the target), as do ASan errors and OOM.

#![no_main]

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::sync::Mutex;

use flowlake_wire::{BodyEncoding, DecodeError, decode_body};
use libfuzzer_sys::fuzz_target;

static PANIC_SITES: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

thread_local! {
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

fuzz_target!(
    init: {
        std::panic::set_hook(Box::new(|info| {
            let site = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()))
                .unwrap_or_default();
            if !PANIC_SITES.lock().unwrap().contains(&site) {
                eprintln!("panic: {info}");
            }
            LAST_PANIC.with(|p| *p.borrow_mut() = Some(site));
        }));
    },
    |data: &[u8]| {
        let (encoding, body) = match data.split_first() {
            Some((b, rest)) if b % 2 == 1 => (BodyEncoding::Zstd, rest),
            Some((_, rest)) => (BodyEncoding::Identity, rest),
            None => (BodyEncoding::Identity, data),
        };
        match decode_body(body, encoding, 16 << 20) {
            Ok(decoded) => {
                let mut rows = 0;
                for batch in &decoded.batches {
                    // The flow schema, string and label-map columns possibly
                    // dictionary-encoded.
                    assert!(flowlake_schemas::is_conformed(&batch.schema()), "{}", batch.schema());
                    flowlake_schemas::validate_batch(batch).expect("accepted batches are valid");
                    rows += batch.num_rows();
                }
                assert_eq!(rows, decoded.rows);
            }
            Err(DecodeError::ArrowPanic) => {
                let site = LAST_PANIC.with(|p| p.borrow_mut().take()).unwrap_or_default();
                if PANIC_SITES.lock().unwrap().insert(site.clone()) {
                    // ".../registry/src/<index>/arrow-buffer-59.3.2/src/x.rs:1" -> "arrow_buffer_59_3_2_src_x_rs_1"
                    let short = site
                        .split_once("/registry/src/")
                        .and_then(|(_, rest)| rest.split_once('/'))
                        .map_or(site.as_str(), |(_, path)| path);
                    let name: String = short
                        .chars()
                        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                        .collect();
                    let dir = std::path::Path::new("fuzz/artifacts/ipc_decode/arrow-panics");
                    std::fs::create_dir_all(dir).expect("artifacts directory");
                    std::fs::write(dir.join(&name), data).expect("save the input");
                    eprintln!("ARROW_PANIC caught: new site {site}, input saved as {name}");
                }
            }
            Err(_) => {}
        }
    }
);
