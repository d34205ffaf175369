//! The DNS columns. Few flows carry DNS, so only the rows that do are appended
//! (densely); `finish` spreads them over the batch with one `take` per column, the
//! other rows null. A record without DNS costs nothing here.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int32Builder, Int64Builder, ListBuilder, StringBuilder, UInt32Array};
use arrow::compute::take;

use crate::record::DnsInfo;

pub(super) struct DnsColumns {
    /// Batch row of each DNS record appended.
    rows: Vec<u32>,
    id: Int32Builder,
    query: StringBuilder,
    qtype: StringBuilder,
    rcode: StringBuilder,
    answers: ListBuilder<StringBuilder>,
    latency_us: Int64Builder,
}

impl Default for DnsColumns {
    fn default() -> Self {
        DnsColumns {
            rows: Vec::new(),
            id: Int32Builder::new(),
            query: StringBuilder::new(),
            qtype: StringBuilder::new(),
            rcode: StringBuilder::new(),
            answers: ListBuilder::new(StringBuilder::new()),
            latency_us: Int64Builder::new(),
        }
    }
}

impl DnsColumns {
    /// Appends the DNS message of batch row `row`.
    pub(super) fn append(&mut self, row: usize, d: &DnsInfo) {
        self.rows
            .push(u32::try_from(row).expect("batch under 4G rows"));
        self.id.append_value(i32::from(d.id));
        self.query.append_option(d.query.as_deref());
        self.qtype.append_option(d.qtype.as_deref());
        self.rcode.append_option(d.rcode.as_deref());
        for a in &d.answers {
            self.answers.values().append_value(a);
        }
        self.answers.append(true);
        self.latency_us
            .append_option(d.latency_us.map(|v| i64::try_from(v).unwrap_or(i64::MAX)));
    }

    /// Pushes the six columns, `rows` long, in schema order; the builder is empty
    /// afterwards.
    pub(super) fn finish_into(&mut self, rows: usize, out: &mut Vec<ArrayRef>) {
        // Row i takes DNS record k when it has one, null otherwise.
        let mut at = vec![None; rows];
        for (k, &row) in self.rows.iter().enumerate() {
            at[row as usize] = Some(k as u32);
        }
        let at = UInt32Array::from(at);
        let dense: [ArrayRef; 6] = [
            Arc::new(self.id.finish()),
            Arc::new(self.query.finish()),
            Arc::new(self.qtype.finish()),
            Arc::new(self.rcode.finish()),
            Arc::new(self.answers.finish()),
            Arc::new(self.latency_us.finish()),
        ];
        for column in dense {
            out.push(take(&column, &at, None).expect("indices are within the DNS records"));
        }
        self.rows.clear();
    }
}
