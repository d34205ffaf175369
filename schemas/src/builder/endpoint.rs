//! The identity columns of one end of a flow (`src_*` or `dst_*`). Identities are
//! shared (`Arc<Identity>`) by all the flows of a pod, service or node, so each
//! distinct identity is taken apart once per batch; rows keep its id, and `finish`
//! writes the eight columns from those ids.

use std::sync::Arc;

use arrow::array::{ArrayRef, MapArray, StructArray};
use arrow::buffer::{BooleanBuffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::DataType;

use super::dict::{Dict, NULL_ID};
use super::text::Interner;
use crate::record::{Endpoint, Identity};
use crate::schema::labels_type;

pub(super) struct EndpointColumns {
    interner: Interner<Identity>,
    /// Namespace, pod, workload, workload kind, node, service and zone of each
    /// distinct identity; a row's id is its entry here.
    texts: Dict<7>,
    /// The range in `labels` of each distinct identity's labels, by entry.
    label_ranges: Vec<std::ops::Range<usize>>,
    /// `(key, value)` entries of every distinct identity's labels, one after another.
    labels: Dict<2>,
}

impl EndpointColumns {
    pub(super) fn new() -> Self {
        EndpointColumns {
            interner: Interner::default(),
            texts: Dict::default(),
            // Entry 0 (no identity) has no labels.
            label_ranges: std::iter::once(0..0).collect(),
            labels: Dict::default(),
        }
    }

    /// The id of `end`'s identity in this batch (`NULL_ID` for none).
    #[inline]
    pub(super) fn id(&mut self, end: &Endpoint) -> u32 {
        match &end.identity {
            Some(identity) => self.interner.id(identity, |id| {
                let first = self.labels.len();
                for (k, v) in &id.labels {
                    self.labels.push([Some(k), Some(v)]);
                }
                self.label_ranges.push(first..self.labels.len());
                self.texts.push([
                    id.namespace.as_deref(),
                    id.pod.as_deref(),
                    id.workload.as_deref(),
                    id.workload_kind.as_deref(),
                    id.node.as_deref(),
                    id.service.as_deref(),
                    id.zone.as_deref(),
                ])
            }),
            None => NULL_ID,
        }
    }

    fn labels_column(&self, rows: &[u32]) -> ArrayRef {
        let ranges = self.label_ranges.as_slice();
        let total = rows.iter().map(|&r| ranges[r as usize].len()).sum();
        let mut entries = Vec::with_capacity(total);
        let mut offsets = Vec::with_capacity(rows.len() + 1);
        offsets.push(0);
        for &r in rows {
            entries.extend(ranges[r as usize].clone().map(|e| e as u32));
            offsets.push(i32::try_from(entries.len()).expect("under 2G labels per batch"));
        }
        let DataType::Map(entries_field, sorted) = labels_type() else {
            unreachable!("labels are a map");
        };
        let DataType::Struct(entry_fields) = entries_field.data_type() else {
            unreachable!("map entries are a struct");
        };
        let [keys, values] = self.labels.columns(&entries);
        let entries = StructArray::new(
            entry_fields.clone(),
            vec![Arc::new(keys), Arc::new(values)],
            None,
        );
        let nulls = rows.contains(&NULL_ID).then(|| {
            NullBuffer::new(BooleanBuffer::collect_bool(rows.len(), |i| {
                rows[i] != NULL_ID
            }))
        });
        Arc::new(MapArray::new(
            entries_field,
            OffsetBuffer::new(ScalarBuffer::from(offsets)),
            entries,
            nulls,
            sorted,
        ))
    }

    /// Pushes the eight columns of `rows` (ids from `id`) in schema order and forgets
    /// the identities.
    pub(super) fn finish_into(&mut self, rows: &[u32], out: &mut Vec<ArrayRef>) {
        let [namespace, pod, workload, kind, node, service, zone] = self.texts.columns(rows);
        for c in [namespace, pod, workload, kind] {
            out.push(Arc::new(c));
        }
        out.push(self.labels_column(rows));
        for c in [node, service, zone] {
            out.push(Arc::new(c));
        }
        self.interner.clear();
        self.texts.clear();
        self.label_ranges.truncate(1);
        self.labels.clear();
    }
}
