//! The plugin registry: the list of constructors (the one place a new plugin
//! is added), `--plugins` (default all), and the enabled set every part of the
//! collector asks ([`PluginSet`]).

use std::collections::BTreeSet;
use std::sync::Arc;

use super::Plugin;
use super::status::{PluginState, PluginStatus, StatusBoard};
use crate::error::{CollectorError, Result};

/// Every built-in plugin, in load order (the flow programs first). Adding a
/// plugin: one folder under `plugins/` and one line here.
const BUILTIN: &[fn() -> Arc<dyn Plugin>] = &[
    || Arc::new(super::flows::Flows),
    || Arc::new(super::drops::Drops),
    || Arc::new(super::dns::Dns),
    || Arc::new(super::tcp::Tcp),
    || Arc::new(super::conntrack::ConntrackPlugin),
    || Arc::new(super::interface_stats::InterfaceStatsPlugin),
    || Arc::new(super::tcp_connection_remote::TcpConnectionRemotePlugin),
    || Arc::new(super::apiserver::ApiServer),
];

/// The known plugins.
#[derive(Clone)]
pub struct PluginRegistry {
    plugins: Vec<Arc<dyn Plugin>>,
}

impl PluginRegistry {
    /// The built-in plugins.
    pub fn builtin() -> Self {
        PluginRegistry {
            plugins: BUILTIN.iter().map(|c| c()).collect(),
        }
    }

    /// Adds a plugin (tests, or a build with plugins of its own); a plugin of
    /// the same name is replaced.
    pub fn register(mut self, plugin: Arc<dyn Plugin>) -> Self {
        self.plugins.retain(|p| p.name() != plugin.name());
        self.plugins.push(plugin);
        self
    }

    /// Names of the known plugins, in load order.
    pub fn names(&self) -> Vec<&'static str> {
        self.plugins.iter().map(|p| p.name()).collect()
    }

    /// Every known plugin enabled.
    pub fn all(&self) -> PluginSet {
        let names: Vec<&str> = self.names();
        self.select(&names).expect("known names")
    }

    /// The plugins named (an unknown name is refused with the known ones).
    pub fn select<S: AsRef<str>>(&self, names: &[S]) -> Result<PluginSet> {
        let mut enabled = BTreeSet::new();
        for n in names {
            let n = n.as_ref().trim();
            if n.is_empty() {
                continue;
            }
            let Some(p) = self.plugins.iter().find(|p| p.name() == n) else {
                return Err(CollectorError::Config(self.unknown(n)));
            };
            enabled.insert(p.name());
        }
        let set = PluginSet {
            plugins: Arc::new(self.plugins.clone()),
            enabled: Arc::new(enabled),
            board: StatusBoard::default(),
        };
        for p in set.known() {
            let state = if set.enabled(p.name()) {
                PluginState::Enabled
            } else {
                PluginState::Disabled
            };
            set.board.set(p.name(), state, None);
        }
        Ok(set)
    }

    fn unknown(&self, name: &str) -> String {
        format!(
            "unknown plugin {name:?}; known plugins: {}",
            self.names().join(", ")
        )
    }
}

/// The known plugins, which of them are enabled, and their states (shared by
/// clones: the datapath and the metrics of one agent see the same states).
#[derive(Clone)]
pub struct PluginSet {
    plugins: Arc<Vec<Arc<dyn Plugin>>>,
    enabled: Arc<BTreeSet<&'static str>>,
    board: StatusBoard,
}

impl Default for PluginSet {
    /// Every built-in plugin.
    fn default() -> Self {
        PluginRegistry::builtin().all()
    }
}

impl std::fmt::Debug for PluginSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.enabled.iter()).finish()
    }
}

impl PartialEq for PluginSet {
    fn eq(&self, other: &Self) -> bool {
        self.enabled == other.enabled
    }
}

impl PluginSet {
    /// The built-in plugins named (see [`PluginRegistry::select`]).
    pub fn select<S: AsRef<str>>(names: &[S]) -> Result<Self> {
        PluginRegistry::builtin().select(names)
    }

    /// Whether plugin `name` is enabled.
    pub fn enabled(&self, name: &str) -> bool {
        self.enabled.contains(name)
    }

    /// Every known plugin, in load order.
    pub fn known(&self) -> impl Iterator<Item = &Arc<dyn Plugin>> {
        self.plugins.iter()
    }

    /// The enabled plugins, in load order.
    pub fn enabled_plugins(&self) -> impl Iterator<Item = &Arc<dyn Plugin>> {
        self.plugins.iter().filter(|p| self.enabled(p.name()))
    }

    /// The plugin named, enabled or not.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Plugin>> {
        self.plugins.iter().find(|p| p.name() == name)
    }

    pub fn board(&self) -> &StatusBoard {
        &self.board
    }

    /// Every known plugin's state, in load order.
    pub fn statuses(&self) -> Vec<PluginStatus> {
        self.known()
            .map(|p| {
                let (state, reason) = self.board.get(p.name()).unwrap_or((
                    if self.enabled(p.name()) {
                        PluginState::Enabled
                    } else {
                        PluginState::Disabled
                    },
                    None,
                ));
                PluginStatus {
                    plugin: p.name(),
                    state,
                    reason,
                }
            })
            .collect()
    }
}

/// Checks one `--plugins` value against the built-in plugins (clap shows the
/// error with the known names).
fn known_plugin(name: &str) -> std::result::Result<String, String> {
    let r = PluginRegistry::builtin();
    let name = name.trim();
    if r.names().contains(&name) {
        Ok(name.to_string())
    } else {
        Err(r.unknown(name))
    }
}

/// `--plugins`.
#[derive(Debug, Clone, clap::Args)]
pub struct PluginArgs {
    /// Collector plugins to enable (comma-separated; default all): flows, drops,
    /// dns, tcp, conntrack, interface_stats, tcp_connection_remote, apiserver.
    #[arg(
        long = "plugins",
        env = "FLOWLAKE_COLLECTOR_PLUGINS",
        value_delimiter = ',',
        value_parser = known_plugin,
        default_value = "flows,drops,dns,tcp,conntrack,interface_stats,tcp_connection_remote,apiserver"
    )]
    pub plugins: Vec<String>,
}

impl From<PluginArgs> for PluginSet {
    fn from(a: PluginArgs) -> Self {
        PluginSet::select(&a.plugins).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_flag_names_every_builtin_plugin() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            p: PluginArgs,
        }
        let cli = Cli::try_parse_from(["x"]).unwrap();
        assert_eq!(cli.p.plugins, PluginRegistry::builtin().names());
        let err = Cli::try_parse_from(["x", "--plugins", "flows,dnss"])
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("unknown plugin \"dnss\"; known plugins: flows, drops, dns, tcp"),
            "{err}"
        );
    }

    #[test]
    fn selection_and_states() {
        let set = PluginSet::select(&["dns", "flows"]).unwrap();
        assert!(set.enabled("flows") && set.enabled("dns") && !set.enabled("drops"));
        let states: Vec<_> = set
            .statuses()
            .into_iter()
            .map(|s| (s.plugin, s.state))
            .collect();
        assert_eq!(states[0], ("flows", PluginState::Enabled));
        assert_eq!(states[1], ("drops", PluginState::Disabled));
        let e = PluginSet::select(&["nope"]).err().unwrap().to_string();
        assert!(
            e.contains("unknown plugin \"nope\"") && e.contains("apiserver"),
            "{e}"
        );
    }
}
