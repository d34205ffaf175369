//! Collector datapath configuration: a plain struct with `Default` and
//! `for_tests()`, and the clap flags (`FLOWLAKE_COLLECTOR_*`) that map into it.

use std::path::PathBuf;
use std::time::Duration;

/// What role an interface plays, which decides its observation points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InterfaceRole {
    /// Host side of a pod's veth: tc ingress = `from_pod`, egress = `to_pod`.
    Pod,
    /// A node interface: tc ingress = `from_network`, egress = `to_network`.
    Node,
}

/// Plain datapath configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct DatapathConfig {
    pub cluster: String,
    pub node: String,
    /// Name prefixes of pod interfaces (host side). A veth whose peer is in another
    /// network namespace is a pod interface whatever its name.
    pub pod_prefixes: Vec<String>,
    /// Node interfaces by name; empty = every physical Ethernet device.
    pub node_interfaces: Vec<String>,
    /// Interfaces never attached (exact names).
    pub exclude: Vec<String>,
    /// Network namespace to observe (a bind-mounted netns file); None = our own.
    pub netns: Option<PathBuf>,
    /// Every flow is reported at least this often.
    pub active_timeout: Duration,
    /// Flows idle this long are evicted before the active timeout.
    pub idle_timeout: Duration,
    /// Capacity of the in-kernel flow map.
    pub flow_map_entries: u32,
    /// Capacity of the record channel, in batches.
    pub channel_batches: usize,
    /// Kernel BTF with `enum skb_drop_reason`.
    pub btf_path: PathBuf,
    /// TCX or clsact for the flow programs (auto: by kernel version).
    pub tc_mode: crate::attach::TcMode,
    /// How often the flow programs' place first in each tc hook is checked.
    pub attach_check_every: Duration,
    /// The plugins enabled (`--plugins`) and their states.
    pub plugins: crate::plugins::PluginSet,
}

impl Default for DatapathConfig {
    fn default() -> Self {
        DatapathConfig {
            cluster: "default".into(),
            node: "localhost".into(),
            pod_prefixes: ["veth", "cali", "lxc", "azv", "gke", "eni", "cni"]
                .map(String::from)
                .to_vec(),
            node_interfaces: Vec::new(),
            exclude: Vec::new(),
            netns: None,
            active_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(5),
            flow_map_entries: 1 << 17,
            channel_batches: 64,
            btf_path: PathBuf::from("/sys/kernel/btf/vmlinux"),
            tc_mode: crate::attach::TcMode::Auto,
            attach_check_every: Duration::from_secs(1),
            plugins: crate::plugins::PluginSet::default(),
        }
    }
}

impl DatapathConfig {
    /// Short timeouts for tests; no node interfaces unless named.
    pub fn for_tests() -> Self {
        DatapathConfig {
            cluster: "test".into(),
            node: "test-node".into(),
            node_interfaces: vec!["-".into()],
            active_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(1),
            ..Default::default()
        }
    }

    /// The role of a link, or None when it is not observed.
    pub fn role(&self, link: &crate::netlink::Link) -> Option<InterfaceRole> {
        if self.exclude.contains(&link.name) || link.hw_type == 772 {
            return None;
        }
        let veth = link.kind.as_deref() == Some("veth");
        if (veth && link.peer_in_other_netns)
            || self
                .pod_prefixes
                .iter()
                .any(|p| link.name.starts_with(p.as_str()))
        {
            return Some(InterfaceRole::Pod);
        }
        if self.node_interfaces.is_empty() {
            // Physical Ethernet devices have no rtnetlink kind.
            return (link.kind.is_none() && link.hw_type == 1).then_some(InterfaceRole::Node);
        }
        self.node_interfaces
            .contains(&link.name)
            .then_some(InterfaceRole::Node)
    }
}

/// Collector datapath flags.
#[derive(Debug, Clone, clap::Args)]
pub struct CollectorArgs {
    /// Cluster name written into every record.
    #[arg(long, env = "FLOWLAKE_COLLECTOR_CLUSTER", default_value = "default")]
    pub cluster: String,
    /// Node name written into every record.
    #[arg(long, env = "FLOWLAKE_COLLECTOR_NODE", default_value = "localhost")]
    pub node: String,
    /// Name prefixes of pod interfaces (host side of the veth).
    #[arg(
        long,
        env = "FLOWLAKE_COLLECTOR_POD_PREFIXES",
        value_delimiter = ',',
        default_value = "veth,cali,lxc,azv,gke,eni,cni"
    )]
    pub pod_prefixes: Vec<String>,
    /// Node interfaces (default: every physical Ethernet device).
    #[arg(
        long,
        env = "FLOWLAKE_COLLECTOR_NODE_INTERFACES",
        value_delimiter = ','
    )]
    pub node_interfaces: Vec<String>,
    /// Interfaces never attached.
    #[arg(long, env = "FLOWLAKE_COLLECTOR_EXCLUDE", value_delimiter = ',')]
    pub exclude: Vec<String>,
    /// Observe another network namespace (path of a netns file).
    #[arg(long, env = "FLOWLAKE_COLLECTOR_NETNS")]
    pub netns: Option<PathBuf>,
    /// Active timeout: every flow is reported at least this often.
    #[arg(long, env = "FLOWLAKE_COLLECTOR_ACTIVE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub active_timeout: Duration,
    /// Idle timeout: flows without packets this long are reported early.
    #[arg(long, env = "FLOWLAKE_COLLECTOR_IDLE_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,
    /// In-kernel flow map capacity.
    #[arg(long, env = "FLOWLAKE_COLLECTOR_FLOW_MAP_ENTRIES", default_value_t = 1 << 17)]
    pub flow_map_entries: u32,
    /// Record channel capacity, in batches.
    #[arg(long, env = "FLOWLAKE_COLLECTOR_CHANNEL_BATCHES", default_value_t = 64)]
    pub channel_batches: usize,
    /// Kernel BTF file.
    #[arg(
        long,
        env = "FLOWLAKE_COLLECTOR_BTF",
        default_value = "/sys/kernel/btf/vmlinux"
    )]
    pub btf: PathBuf,
    /// How the flow programs attach to tc: TCX (kernels >= 6.6), clsact, or auto.
    #[arg(
        long,
        env = "FLOWLAKE_COLLECTOR_TC_MODE",
        value_enum,
        default_value = "auto"
    )]
    pub tc_mode: crate::attach::TcMode,
    /// How often the flow programs' place first in each tc hook is checked (a
    /// CNI attaching later is overtaken again).
    #[arg(long, env = "FLOWLAKE_COLLECTOR_ATTACH_CHECK_EVERY", default_value = "1s", value_parser = humantime::parse_duration)]
    pub attach_check_every: Duration,
    #[command(flatten)]
    pub plugins: crate::plugins::PluginArgs,
}

impl From<CollectorArgs> for DatapathConfig {
    fn from(a: CollectorArgs) -> Self {
        DatapathConfig {
            cluster: a.cluster,
            node: a.node,
            pod_prefixes: a.pod_prefixes,
            node_interfaces: a.node_interfaces,
            exclude: a.exclude,
            netns: a.netns,
            active_timeout: a.active_timeout,
            idle_timeout: a.idle_timeout,
            flow_map_entries: a.flow_map_entries,
            channel_batches: a.channel_batches,
            btf_path: a.btf,
            tc_mode: a.tc_mode,
            attach_check_every: a.attach_check_every,
            plugins: a.plugins.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::Link;

    fn link(name: &str, kind: Option<&str>, other_ns: bool, hw: u16) -> Link {
        Link {
            index: 1,
            name: name.into(),
            kind: kind.map(String::from),
            peer_in_other_netns: other_ns,
            hw_type: hw,
        }
    }

    #[test]
    fn roles_from_kind_and_names() {
        let c = DatapathConfig::default();
        assert_eq!(c.role(&link("lo", None, false, 772)), None);
        assert_eq!(
            c.role(&link("eth0", None, false, 1)),
            Some(InterfaceRole::Node)
        );
        assert_eq!(
            c.role(&link("x1", Some("veth"), true, 1)),
            Some(InterfaceRole::Pod)
        );
        assert_eq!(
            c.role(&link("cali12", Some("veth"), false, 1)),
            Some(InterfaceRole::Pod)
        );
        assert_eq!(c.role(&link("br0", Some("bridge"), false, 1)), None);
        let t = DatapathConfig::for_tests();
        assert_eq!(t.role(&link("eth0", None, false, 1)), None);
    }
}
