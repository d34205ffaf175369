//! Which pods a capture selects: a namespace, a Kubernetes label selector,
//! pod names and node names, all of which must hold. Resolved on each node
//! against the pods running there, again and again while the capture runs.

use std::collections::BTreeMap;

use super::RequestError;

type Result<T> = std::result::Result<T, RequestError>;

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

impl Requirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::NotExists(k) => !labels.contains_key(k),
        }
    }
}

/// A label selector in Kubernetes' string form (`app=web,tier!=db,env in (a,b),!canary`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    pub requirements: Vec<Requirement>,
}

fn bad(msg: impl Into<String>) -> RequestError {
    RequestError::Selector(msg.into())
}

/// A capture id: 1 to 64 of `[a-z0-9-]` (it names files and object paths).
pub fn check_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(bad(format!(
            "bad capture id {id:?} (1 to 64 of a-z, 0-9, -)"
        )))
    }
}

/// A label key: an optional DNS-subdomain prefix and `/`, then a name of at
/// most 63 characters of `[A-Za-z0-9._-]`, starting and ending alphanumeric.
fn key(s: &str) -> Result<String> {
    let s = s.trim();
    let name = match s.rsplit_once('/') {
        Some((prefix, name)) => {
            if prefix.is_empty()
                || prefix.len() > 253
                || !prefix
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
            {
                return Err(bad(format!("bad label key prefix in {s:?}")));
            }
            name
        }
        None => s,
    };
    if name.is_empty() || !name_like(name) {
        return Err(bad(format!("bad label key {s:?}")));
    }
    Ok(s.to_string())
}

fn name_like(s: &str) -> bool {
    s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// A label value: empty, or like a key's name.
fn value(s: &str) -> Result<String> {
    let s = s.trim();
    if s.is_empty() || name_like(s) {
        Ok(s.to_string())
    } else {
        Err(bad(format!("bad label value {s:?}")))
    }
}

/// Splits on commas outside parentheses.
fn clauses(s: &str) -> Result<Vec<&str>> {
    let (mut depth, mut start, mut out) = (0i32, 0, Vec::new());
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        if !(0..=1).contains(&depth) {
            return Err(bad(format!("unbalanced parentheses in {s:?}")));
        }
    }
    if depth != 0 {
        return Err(bad(format!("unbalanced parentheses in {s:?}")));
    }
    out.push(&s[start..]);
    Ok(out)
}

fn set(k: &str, rest: &str, op: &str) -> Result<Vec<String>> {
    let inner = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| bad(format!("{k} {op} needs a list in parentheses")))?;
    let values = inner.split(',').map(value).collect::<Result<Vec<_>>>()?;
    if values.iter().all(String::is_empty) {
        return Err(bad(format!("{k} {op} () has no values")));
    }
    Ok(values)
}

impl LabelSelector {
    /// Parses the string form; empty selects every pod.
    pub fn parse(s: &str) -> Result<LabelSelector> {
        let mut requirements = Vec::new();
        if s.trim().is_empty() {
            return Ok(LabelSelector { requirements });
        }
        for clause in clauses(s)? {
            let c = clause.trim();
            if c.is_empty() {
                return Err(bad(format!("empty requirement in {s:?}")));
            }
            let r = if let Some(k) = c.strip_prefix('!') {
                Requirement::NotExists(key(k)?)
            } else if let Some((k, v)) = c.split_once("!=") {
                Requirement::NotEquals(key(k)?, value(v)?)
            } else if let Some((k, v)) = c.split_once("==").or_else(|| c.split_once('=')) {
                Requirement::Equals(key(k)?, value(v)?)
            } else if let Some((k, rest)) = c.split_once(" notin ") {
                Requirement::NotIn(key(k)?, set(k, rest, "notin")?)
            } else if let Some((k, rest)) = c.split_once(" in ") {
                Requirement::In(key(k)?, set(k, rest, "in")?)
            } else {
                Requirement::Exists(key(c)?)
            };
            requirements.push(r);
        }
        Ok(LabelSelector { requirements })
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }
}

/// What a capture selects; every given part must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    pub namespace: String,
    pub labels: LabelSelector,
    /// Empty: any pod name.
    pub pods: Vec<String>,
    /// Empty: any node.
    pub nodes: Vec<String>,
}

/// A pod as the node knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub node: String,
    pub labels: BTreeMap<String, String>,
    pub ips: Vec<std::net::IpAddr>,
    /// The host side of its interface, when known (see `resolve.rs`).
    pub interface: Option<String>,
}

impl Selector {
    /// A selector from its parts; the namespace is required.
    pub fn new(
        namespace: &str,
        labels: &str,
        pods: Vec<String>,
        nodes: Vec<String>,
    ) -> Result<Selector> {
        let dns_label = name_like(namespace)
            && namespace
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !dns_label {
            return Err(bad(format!("bad namespace {namespace:?}")));
        }
        for p in &pods {
            if p.is_empty() || p.len() > 253 {
                return Err(bad(format!("bad pod name {p:?}")));
            }
        }
        Ok(Selector {
            namespace: namespace.to_string(),
            labels: LabelSelector::parse(labels)?,
            pods,
            nodes,
        })
    }

    /// This node takes part in the capture.
    pub fn selects_node(&self, node: &str) -> bool {
        self.nodes.is_empty() || self.nodes.iter().any(|n| n == node)
    }

    pub fn matches(&self, pod: &PodInfo) -> bool {
        pod.namespace == self.namespace
            && self.selects_node(&pod.node)
            && (self.pods.is_empty() || self.pods.contains(&pod.name))
            && self.labels.matches(&pod.labels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ns: &str, name: &str, node: &str, labels: &[(&str, &str)]) -> PodInfo {
        PodInfo {
            namespace: ns.into(),
            name: name.into(),
            node: node.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ips: Vec::new(),
            interface: Some(format!("veth-{name}")),
        }
    }

    #[test]
    fn label_selectors_in_kubernetes_form() {
        let web = pod(
            "shop",
            "web-0",
            "a",
            &[("app", "web"), ("tier", "front"), ("env", "prod")],
        );
        let db = pod("shop", "db-0", "a", &[("app", "db"), ("canary", "")]);
        for (sel, w, d) in [
            ("", true, true),
            ("app=web", true, false),
            ("app==web", true, false),
            ("app!=web", false, true),
            ("app in (web, db)", true, true),
            ("app notin (web)", false, true),
            ("env notin (prod)", false, true),
            ("canary", false, true),
            ("!canary", true, false),
            ("app=web,tier=front", true, false),
            ("app in (web,db),!canary", true, false),
            ("example.com/team=x", false, false),
        ] {
            let s = LabelSelector::parse(sel).unwrap();
            assert_eq!(
                (s.matches(&web.labels), s.matches(&db.labels)),
                (w, d),
                "{sel:?}"
            );
        }
    }

    #[test]
    fn invalid_selectors_are_refused() {
        for sel in [
            "app=",
            "=web",
            "app=we b",
            "app in web",
            "app in ()",
            "a,,b",
            "app in (a",
            "-x=1",
            "a/b/c=1",
            "Bad_Prefix/x=1",
        ] {
            let r = LabelSelector::parse(sel);
            // `app=` is valid in Kubernetes (empty value); the rest are not.
            if sel == "app=" {
                assert!(r.is_ok(), "{sel:?}");
            } else {
                assert!(
                    matches!(r, Err(RequestError::Selector(_))),
                    "{sel:?}: {r:?}"
                );
            }
        }
    }

    #[test]
    fn namespace_pods_and_nodes_narrow_the_selection() {
        let pods = [
            pod("shop", "web-0", "a", &[("app", "web")]),
            pod("shop", "web-1", "b", &[("app", "web")]),
            pod("shop", "db-0", "a", &[("app", "db")]),
            pod("other", "web-9", "a", &[("app", "web")]),
            PodInfo {
                interface: None,
                ..pod("shop", "web-2", "a", &[("app", "web")])
            },
        ];
        let names = |s: &Selector| {
            pods.iter()
                .filter(|p| s.matches(p) && p.interface.is_some())
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
        };
        let s = Selector::new("shop", "app=web", vec![], vec![]).unwrap();
        assert_eq!(names(&s), ["web-0", "web-1"]);
        let s = Selector::new("shop", "app=web", vec![], vec!["a".into()]).unwrap();
        assert_eq!(names(&s), ["web-0"]);
        assert!(!s.selects_node("b"));
        let s = Selector::new("shop", "", vec!["db-0".into(), "web-1".into()], vec![]).unwrap();
        assert_eq!(names(&s), ["web-1", "db-0"]);
        assert!(Selector::new("", "", vec![], vec![]).is_err());
        assert!(Selector::new("Shop", "", vec![], vec![]).is_err());
        assert!(Selector::new("shop", "app=(", vec![], vec![]).is_err());
    }
}
