//! Pod context labels (Retina's `contextOptions`) and the namespace filter.

use flowlake_schemas::{Direction, Endpoint, FlowRecord};

use super::config::{ContextLabel, MetricsMode, RetinaConfig};

/// A label set of an `adv_*` series (keys are static, values owned).
pub type Labels = Vec<(&'static str, String)>;

/// Which label keys a context option writes, per prefix.
fn keys(label: ContextLabel, side: Side) -> &'static [&'static str] {
    use ContextLabel as C;
    match (side, label) {
        (Side::Source, C::Ip) => &["source_ip"],
        (Side::Source, C::Namespace) => &["source_namespace"],
        (Side::Source, C::Podname) => &["source_podname"],
        (Side::Source, C::Workload) => &["source_workload_kind", "source_workload_name"],
        (Side::Source, C::Service) => &["source_service"],
        (Side::Source, C::Port) => &["source_port"],
        (Side::Source, C::Zone) => &["source_zone"],
        (Side::Destination, C::Ip) => &["destination_ip"],
        (Side::Destination, C::Namespace) => &["destination_namespace"],
        (Side::Destination, C::Podname) => &["destination_podname"],
        (Side::Destination, C::Workload) => {
            &["destination_workload_kind", "destination_workload_name"]
        }
        (Side::Destination, C::Service) => &["destination_service"],
        (Side::Destination, C::Port) => &["destination_port"],
        (Side::Destination, C::Zone) => &["destination_zone"],
        (Side::Local, C::Ip) => &["ip"],
        (Side::Local, C::Namespace) => &["namespace"],
        (Side::Local, C::Podname) => &["podname"],
        (Side::Local, C::Workload) => &["workload_kind", "workload_name"],
        (Side::Local, C::Service) => &["service"],
        (Side::Local, C::Port) => &["port"],
        (Side::Local, C::Zone) => &["zone"],
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Source,
    Destination,
    Local,
}

/// Builds context labels of records and decides which records get pod-level series.
#[derive(Debug, Clone)]
pub struct Context {
    mode: MetricsMode,
    source: Vec<ContextLabel>,
    destination: Vec<ContextLabel>,
    include: Vec<String>,
    exclude: Vec<String>,
}

impl Context {
    pub fn new(cfg: &RetinaConfig) -> Self {
        let norm = |v: &[ContextLabel]| {
            let mut v = v.to_vec();
            v.sort();
            v.dedup();
            v
        };
        Context {
            mode: cfg.mode,
            source: norm(&cfg.source_labels),
            destination: norm(&cfg.destination_labels),
            include: cfg.include_namespaces.clone(),
            exclude: cfg.exclude_namespaces.clone(),
        }
    }

    /// Whether pod-level metrics are produced at all.
    pub fn enabled(&self) -> bool {
        self.mode != MetricsMode::Basic
    }

    fn namespace_allowed(&self, ns: Option<&str>) -> bool {
        match ns {
            Some(ns) if !self.include.is_empty() => self.include.iter().any(|i| i == ns),
            Some(ns) => !self.exclude.iter().any(|e| e == ns),
            None => self.include.is_empty(),
        }
    }

    fn namespace(end: &Endpoint) -> Option<&str> {
        end.identity.as_ref()?.namespace.as_deref()
    }

    /// The context labels of `r`, or `None` when the namespace filter leaves it out.
    /// Remote mode: a record counts when either end's namespace is allowed. Local
    /// mode: the local end (the source of egress, the destination of ingress) decides.
    pub fn labels(&self, r: &FlowRecord) -> Option<Labels> {
        let mut out = Labels::new();
        match self.mode {
            MetricsMode::Basic => return None,
            MetricsMode::Remote => {
                if !self.namespace_allowed(Self::namespace(&r.src))
                    && !self.namespace_allowed(Self::namespace(&r.dst))
                {
                    return None;
                }
                push(&mut out, &self.source, Side::Source, &r.src);
                push(&mut out, &self.destination, Side::Destination, &r.dst);
            }
            MetricsMode::Local => {
                let local = match r.direction() {
                    Direction::Egress => &r.src,
                    Direction::Ingress => &r.dst,
                };
                if !self.namespace_allowed(Self::namespace(local)) {
                    return None;
                }
                push(&mut out, &self.source, Side::Local, local);
            }
        }
        Some(out)
    }
}

fn push(out: &mut Labels, options: &[ContextLabel], side: Side, end: &Endpoint) {
    let id = end.identity.as_deref();
    let text = |v: Option<&String>| v.cloned().unwrap_or_default();
    for &option in options {
        let keys = keys(option, side);
        match option {
            ContextLabel::Ip => out.push((keys[0], end.ip.to_string())),
            ContextLabel::Namespace => {
                out.push((keys[0], text(id.and_then(|i| i.namespace.as_ref()))))
            }
            ContextLabel::Podname => out.push((keys[0], text(id.and_then(|i| i.pod.as_ref())))),
            ContextLabel::Workload => {
                out.push((keys[0], text(id.and_then(|i| i.workload_kind.as_ref()))));
                out.push((keys[1], text(id.and_then(|i| i.workload.as_ref()))));
            }
            ContextLabel::Service => out.push((keys[0], text(id.and_then(|i| i.service.as_ref())))),
            ContextLabel::Port => {
                out.push((keys[0], end.port.map(|p| p.to_string()).unwrap_or_default()))
            }
            ContextLabel::Zone => out.push((keys[0], text(id.and_then(|i| i.zone.as_ref())))),
        }
    }
}
