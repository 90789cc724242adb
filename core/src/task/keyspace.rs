//! Where crewq's streams live: key names per agent type, in the seed's layout
//! or a Redis Cluster layout.

use std::borrow::Borrow;
use std::fmt;

/// A name that cannot be used in a key or a group name.
///
/// ```
/// use crewq_core::AgentType;
/// let err = AgentType::new("re search").unwrap_err();
/// assert_eq!(err.to_string(), r#"invalid agent type "re search": contains whitespace"#);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {name:?}: {reason}")]
pub struct InvalidName {
    /// What the name was for: `agent type`, `key prefix`, `group name` ...
    pub what: &'static str,
    /// The name as given.
    pub name: String,
    /// Why it was refused.
    pub reason: &'static str,
}

/// Checks a name that goes into a key: non-empty, no whitespace, no braces.
///
/// Braces are refused because Redis Cluster hashes only the part of a key
/// between the first `{` and the next `}` (the hash tag): a brace inside an
/// agent type or a prefix would move keys to another slot than the
/// [`Layout::Cluster`] layout promises.
fn check_name(what: &'static str, name: &str) -> Result<(), InvalidName> {
    let reason = if name.is_empty() {
        "is empty"
    } else if name.chars().any(char::is_whitespace) {
        "contains whitespace"
    } else if name.contains(['{', '}']) {
        "contains '{' or '}' (Redis Cluster hash-tag delimiters)"
    } else if name.chars().any(char::is_control) {
        "contains a control character"
    } else {
        return Ok(());
    };
    Err(InvalidName {
        what,
        name: name.to_owned(),
        reason,
    })
}

/// The name of an agent type (`research`, `review` ...), checked to be
/// usable inside stream keys.
///
/// Non-empty, without whitespace, control characters, `{` or `}`.
///
/// ```
/// use crewq_core::AgentType;
/// let research = AgentType::new("research")?;
/// assert_eq!(research.as_str(), "research");
/// assert!(AgentType::new("").is_err());
/// assert!(AgentType::new("a{b}").is_err());
/// # Ok::<(), crewq_core::InvalidName>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AgentType(String);

impl AgentType {
    /// Checks `name`.
    ///
    /// # Errors
    ///
    /// [`InvalidName`] when it is empty or has whitespace, a control
    /// character, `{` or `}`.
    pub fn new(name: impl Into<String>) -> Result<Self, InvalidName> {
        let name = name.into();
        check_name("agent type", &name)?;
        Ok(AgentType(name))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AgentType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for AgentType {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

// Sound: Eq, Ord and Hash are derived from the inner String, as str's are.
impl Borrow<str> for AgentType {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for AgentType {
    type Error = InvalidName;
    fn try_from(name: &str) -> Result<Self, InvalidName> {
        AgentType::new(name)
    }
}

impl TryFrom<String> for AgentType {
    type Error = InvalidName;
    fn try_from(name: String) -> Result<Self, InvalidName> {
        AgentType::new(name)
    }
}

/// How keys are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Layout {
    /// The first seed's keys, so its Python agents interoperate:
    /// `<prefix>:tasks:<agent_type>`, `<prefix>:dlq:<agent_type>` and one
    /// `<prefix>:results` for every agent type. Fine on a single Redis node;
    /// on a cluster the task stream and the results stream of one agent type
    /// hash to different slots, so "ack + append result" cannot be atomic.
    Seed,
    /// A Redis Cluster layout: `<prefix>:{<agent_type>}:tasks`,
    /// `<prefix>:{<agent_type>}:dlq` and `<prefix>:{<agent_type>}:results`.
    ///
    /// Redis Cluster hashes only the hash tag `{<agent_type>}` of these keys,
    /// so all three streams of one agent type live in one slot, and the
    /// worker's atomic steps (acknowledge a task and append its result, or
    /// acknowledge it and append its dead letter: `MULTI` or a script) touch
    /// one slot, as Redis Cluster requires (`CROSSSLOT` otherwise). Results
    /// are therefore per agent type rather than one shared stream: a shared
    /// one would live in a single slot that no agent type's tasks share.
    /// Different agent types still spread over the cluster.
    Cluster,
}

/// How the consumer group of an agent type's task stream is named.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GroupNaming {
    /// `<agent_type><suffix>`: with suffix `-workers`, `research-workers`,
    /// as the seed's workers (`agents/research_agent.py`,
    /// `run_workflow.py`) name theirs.
    PerAgentType {
        /// Appended to the agent type.
        suffix: String,
    },
    /// One name on every task stream. `GroupNaming::Fixed("default".into())`
    /// matches the seed's `TaskConsumer` when it is built without a
    /// `group_name`.
    Fixed(String),
}

impl GroupNaming {
    /// The seed workers' naming: `<agent_type>-workers`.
    pub fn seed() -> Self {
        GroupNaming::PerAgentType {
            suffix: "-workers".to_owned(),
        }
    }
}

/// The keys and the group of one agent type.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AgentKeys {
    /// The task stream.
    pub tasks: String,
    /// The dead-letter stream.
    pub dlq: String,
    /// The stream results are appended to.
    pub results: String,
    /// The consumer group workers read the task stream in.
    pub group: String,
    /// The delayed set: entries waiting for their due time.
    pub delayed: String,
}

/// Where the streams of each agent type live, and their consumer group.
///
/// The default is the first seed's layout ([`Layout::Seed`], prefix
/// `agent`, groups `<agent_type>-workers`), so crewq and the seed's Python
/// agents share streams and groups. [`Keyspace::cluster`] is the layout for
/// Redis Cluster (see [`Layout::Cluster`] for why).
///
/// ```
/// use crewq_core::{AgentType, Keyspace};
/// let research = AgentType::new("research")?;
///
/// let seed = Keyspace::default();
/// assert_eq!(seed.tasks(&research), "agent:tasks:research");
/// assert_eq!(seed.dlq(&research), "agent:dlq:research");
/// assert_eq!(seed.results(&research), "agent:results");
/// assert_eq!(seed.group(&research), "research-workers");
///
/// let cluster = Keyspace::cluster().with_prefix("myapp")?;
/// assert_eq!(cluster.tasks(&research), "myapp:{research}:tasks");
/// assert_eq!(cluster.dlq(&research), "myapp:{research}:dlq");
/// assert_eq!(cluster.results(&research), "myapp:{research}:results");
/// # Ok::<(), crewq_core::InvalidName>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Keyspace {
    layout: Layout,
    prefix: String,
    groups: GroupNaming,
}

impl Default for Keyspace {
    fn default() -> Self {
        Keyspace::seed()
    }
}

impl Keyspace {
    /// The seed's prefix.
    pub const SEED_PREFIX: &'static str = "agent";
    /// The cluster layout's default prefix.
    pub const CLUSTER_PREFIX: &'static str = "crewq";

    /// The first seed's layout: `agent:tasks:<t>`, `agent:dlq:<t>`,
    /// `agent:results`, groups `<t>-workers`.
    pub fn seed() -> Self {
        Keyspace {
            layout: Layout::Seed,
            prefix: Self::SEED_PREFIX.to_owned(),
            groups: GroupNaming::seed(),
        }
    }

    /// The Redis Cluster layout: `crewq:{<t>}:tasks`, `crewq:{<t>}:dlq`,
    /// `crewq:{<t>}:results`, groups `<t>-workers`.
    pub fn cluster() -> Self {
        Keyspace {
            layout: Layout::Cluster,
            prefix: Self::CLUSTER_PREFIX.to_owned(),
            groups: GroupNaming::seed(),
        }
    }

    /// The same layout under another prefix.
    ///
    /// # Errors
    ///
    /// [`InvalidName`] for an empty prefix or one with whitespace, a control
    /// character, `{` or `}` (a brace would become the cluster hash tag).
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Result<Self, InvalidName> {
        let prefix = prefix.into();
        check_name("key prefix", &prefix)?;
        self.prefix = prefix;
        Ok(self)
    }

    /// The same keys with groups named another way.
    ///
    /// # Errors
    ///
    /// [`InvalidName`] for a fixed name that is empty or has whitespace, a
    /// control character or a brace, or a suffix that has one of those.
    pub fn with_groups(mut self, groups: GroupNaming) -> Result<Self, InvalidName> {
        match &groups {
            GroupNaming::Fixed(name) => check_name("group name", name)?,
            GroupNaming::PerAgentType { suffix } if !suffix.is_empty() => {
                check_name("group suffix", suffix)?;
            }
            GroupNaming::PerAgentType { .. } => {}
        }
        self.groups = groups;
        Ok(self)
    }

    /// The layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The prefix of every key.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// How groups are named.
    pub fn groups(&self) -> &GroupNaming {
        &self.groups
    }

    /// The task stream of `agent`.
    pub fn tasks(&self, agent: &AgentType) -> String {
        self.key(agent, "tasks")
    }

    /// The dead-letter stream of `agent`.
    pub fn dlq(&self, agent: &AgentType) -> String {
        self.key(agent, "dlq")
    }

    /// The stream the progress `agent`'s handlers report is appended to
    /// ([`Context::progress`](crate::worker::Context::progress)): crewq's
    /// own, beside the task stream (in its hash slot on Redis Cluster).
    pub fn progress(&self, agent: &AgentType) -> String {
        self.key(agent, "progress")
    }

    /// The delayed set of `agent`: retries waiting out their back-off and
    /// tasks dispatched for later, each with its due time, until a worker
    /// promotes it into the task stream (see
    /// [`Broker::promote`](crate::Broker::promote)). A sorted set in the task
    /// stream's hash slot in the cluster layout, since a settle writes to it
    /// in the same script as it acknowledges the task.
    ///
    /// ```
    /// use crewq_core::{AgentType, Keyspace};
    /// let research = AgentType::new("research")?;
    /// assert_eq!(Keyspace::default().delayed(&research), "agent:delayed:research");
    /// assert_eq!(Keyspace::cluster().delayed(&research), "crewq:{research}:delayed");
    /// # Ok::<(), crewq_core::InvalidName>(())
    /// ```
    pub fn delayed(&self, agent: &AgentType) -> String {
        self.key(agent, "delayed")
    }

    /// The keys of `agent`'s shared rate limit (see [`crate::ratelimit`]):
    /// `<prefix>:rate:<kind>:<t>` in the seed layout, in the task stream's
    /// hash slot in the cluster layout, so one script touches them all.
    ///
    /// ```
    /// use crewq_core::{AgentType, Keyspace};
    /// let research = AgentType::new("research")?;
    /// assert_eq!(Keyspace::default().rate(&research).starts, "agent:rate:starts:research");
    /// assert_eq!(Keyspace::cluster().rate(&research).running, "crewq:{research}:rate:running");
    /// # Ok::<(), crewq_core::InvalidName>(())
    /// ```
    pub fn rate(&self, agent: &AgentType) -> crate::RateKeys {
        let key = |kind: &str| match self.layout {
            Layout::Seed => format!("{}:rate:{kind}:{agent}", self.prefix),
            Layout::Cluster => format!("{}:{{{agent}}}:rate:{kind}", self.prefix),
        };
        crate::RateKeys {
            starts: key("starts"),
            running: key("running"),
            paused: key("paused"),
            limit: key("limit"),
        }
    }

    /// The stream that results of `agent`'s tasks are appended to: the one
    /// shared `<prefix>:results` in the seed layout, one per agent type in
    /// the cluster layout.
    pub fn results(&self, agent: &AgentType) -> String {
        match self.layout {
            Layout::Seed => format!("{}:results", self.prefix),
            Layout::Cluster => self.key(agent, "results"),
        }
    }

    /// The consumer group that `agent`'s workers read its task stream in.
    pub fn group(&self, agent: &AgentType) -> String {
        match &self.groups {
            GroupNaming::PerAgentType { suffix } => format!("{agent}{suffix}"),
            GroupNaming::Fixed(name) => name.clone(),
        }
    }

    /// The key that remembers a dispatched task for idempotent dispatch: a
    /// retried dispatch of the same task id finds it set and appends nothing
    /// (see [`Broker::xadd_once`](crate::Broker::xadd_once)).
    ///
    /// In the seed layout it is `<prefix>:dispatched:<agent_type>:<task_id>`;
    /// in the cluster layout `<prefix>:{<agent_type>}:dispatched:<task_id>`,
    /// in the task stream's hash slot, since the marker and the append are
    /// one script. The task id may hold any character: only the first
    /// `{...}` of a key is its hash tag, and that is the agent type's.
    ///
    /// ```
    /// use crewq_core::{AgentType, Keyspace};
    /// let research = AgentType::new("research")?;
    /// assert_eq!(
    ///     Keyspace::default().dispatched_marker(&research, "t-1"),
    ///     "agent:dispatched:research:t-1"
    /// );
    /// assert_eq!(
    ///     Keyspace::cluster().dispatched_marker(&research, "t-1"),
    ///     "crewq:{research}:dispatched:t-1"
    /// );
    /// # Ok::<(), crewq_core::InvalidName>(())
    /// ```
    pub fn dispatched_marker(&self, agent: &AgentType, task_id: &str) -> String {
        match self.layout {
            Layout::Seed => format!("{}:dispatched:{agent}:{task_id}", self.prefix),
            Layout::Cluster => format!("{}:{{{agent}}}:dispatched:{task_id}", self.prefix),
        }
    }

    /// The task stream of `agent`'s priority lane `priority` (see
    /// [`crate::lanes`]): lane 0 is the task stream itself
    /// ([`Keyspace::tasks`], the seed's key), each priority above 0 a
    /// stream of its own beside it, in its hash slot in the cluster layout.
    ///
    /// ```
    /// use crewq_core::{AgentType, Keyspace, Priority};
    /// let research = AgentType::new("research")?;
    /// let five = Priority::new(5).expect("in range");
    /// assert_eq!(Keyspace::default().lane(&research, Priority::MIN), "agent:tasks:research");
    /// assert_eq!(Keyspace::default().lane(&research, five), "agent:tasks@5:research");
    /// assert_eq!(Keyspace::cluster().lane(&research, five), "crewq:{research}:tasks@5");
    /// # Ok::<(), crewq_core::InvalidName>(())
    /// ```
    pub fn lane(&self, agent: &AgentType, priority: crate::Priority) -> String {
        match u8::from(priority) {
            0 => self.tasks(agent),
            p => self.key(agent, &format!("tasks@{p}")),
        }
    }

    /// The delayed set of `agent`'s priority lane `priority`: retries and
    /// scheduled tasks of that priority wait there, and are promoted into
    /// the lane's stream. Lane 0's is [`Keyspace::delayed`].
    pub fn lane_delayed(&self, agent: &AgentType, priority: crate::Priority) -> String {
        match u8::from(priority) {
            0 => self.delayed(agent),
            p => self.key(agent, &format!("delayed@{p}")),
        }
    }

    /// The keys of `agent`'s priority lane `priority`: its task stream and
    /// delayed set, and the agent type's group, results and dead letters.
    /// Lane 0's are [`Keyspace::keys`].
    pub fn lane_keys(&self, agent: &AgentType, priority: crate::Priority) -> AgentKeys {
        AgentKeys {
            tasks: self.lane(agent, priority),
            delayed: self.lane_delayed(agent, priority),
            ..self.keys(agent)
        }
    }

    /// All of `agent`'s keys and its group at once.
    pub fn keys(&self, agent: &AgentType) -> AgentKeys {
        AgentKeys {
            tasks: self.tasks(agent),
            dlq: self.dlq(agent),
            results: self.results(agent),
            group: self.group(agent),
            delayed: self.delayed(agent),
        }
    }

    fn key(&self, agent: &AgentType, kind: &str) -> String {
        match self.layout {
            Layout::Seed => format!("{}:{kind}:{agent}", self.prefix),
            Layout::Cluster => format!("{}:{{{agent}}}:{kind}", self.prefix),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(name: &str) -> AgentType {
        AgentType::new(name).expect("valid")
    }

    /// The part of a key Redis Cluster hashes (CLUSTER KEYSLOT's rule).
    fn hash_tag(key: &str) -> &str {
        if let Some(open) = key.find('{')
            && let Some(len) = key[open + 1..].find('}')
            && len > 0
        {
            return &key[open + 1..open + 1 + len];
        }
        key
    }

    #[test]
    fn seed_layout_matches_the_seed_python_keys() {
        let ks = Keyspace::seed();
        let keys = ks.keys(&agent("research"));
        assert_eq!(keys.tasks, "agent:tasks:research");
        assert_eq!(keys.dlq, "agent:dlq:research");
        assert_eq!(keys.results, "agent:results");
        assert_eq!(keys.group, "research-workers");
        assert_eq!(ks, Keyspace::default());
    }

    #[test]
    fn cluster_layout_puts_every_key_of_an_agent_type_in_one_slot() {
        let ks = Keyspace::cluster();
        for name in ["research", "review", "a:b", "ünï"] {
            let keys = ks.keys(&agent(name));
            assert_eq!(hash_tag(&keys.tasks), name);
            assert_eq!(hash_tag(&keys.dlq), name);
            assert_eq!(hash_tag(&keys.results), name);
        }
        assert_eq!(ks.tasks(&agent("research")), "crewq:{research}:tasks");
    }

    #[test]
    fn prefix_is_configurable_and_checked() {
        let ks = Keyspace::seed().with_prefix("app1").expect("valid");
        assert_eq!(ks.tasks(&agent("x")), "app1:tasks:x");
        assert_eq!(ks.results(&agent("x")), "app1:results");
        for bad in ["", "a b", "a{", "}"] {
            let err = Keyspace::cluster().with_prefix(bad).err();
            assert_eq!(err.map(|e| e.what), Some("key prefix"), "{bad:?}");
        }
    }

    #[test]
    fn group_naming_can_follow_the_seed_consumer_default() {
        let ks = Keyspace::seed()
            .with_groups(GroupNaming::Fixed("default".into()))
            .expect("valid");
        assert_eq!(ks.group(&agent("research")), "default");
        let ks = Keyspace::seed()
            .with_groups(GroupNaming::PerAgentType {
                suffix: String::new(),
            })
            .expect("valid");
        assert_eq!(ks.group(&agent("research")), "research");
        assert!(
            Keyspace::seed()
                .with_groups(GroupNaming::Fixed(String::new()))
                .is_err()
        );
        assert!(
            Keyspace::seed()
                .with_groups(GroupNaming::PerAgentType {
                    suffix: " x".into()
                })
                .is_err()
        );
    }

    #[test]
    fn agent_type_names_are_checked_with_a_reason() {
        let cases = [
            ("", "is empty"),
            ("a b", "contains whitespace"),
            ("a\tb", "contains whitespace"),
            (
                "a{b",
                "contains '{' or '}' (Redis Cluster hash-tag delimiters)",
            ),
            (
                "a}b",
                "contains '{' or '}' (Redis Cluster hash-tag delimiters)",
            ),
            ("a\u{7}b", "contains a control character"),
        ];
        for (name, reason) in cases {
            let err = AgentType::new(name).err();
            assert_eq!(err.map(|e| e.reason), Some(reason), "{name:?}");
        }
        for good in ["research", "a:b", "report-v2", "ünï", "a.b_c"] {
            assert!(AgentType::new(good).is_ok(), "{good}");
        }
    }
}
