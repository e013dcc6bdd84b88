//! Segments: named groups of users, defined in a config file (`--segments`, default the shipped
//! `config/segments.toml`), evaluated by the profile processor on every change of a profile and
//! at every time boundary a rule depends on. Entries and exits go to `zmp.audiences.v1`.
//!
//! A segment is a list of rules, all of which must hold: `{ fact, op, value }`. Facts are
//! profile fields and times relative to the evaluation time (docs/segments.md lists them). A
//! segment may name a consent `purpose`: only users who granted it are members, so revoking it
//! takes them out at once.

use std::path::Path;

use anyhow::{Context as _, bail};
use serde::Deserialize;

use schemas::time::{DAY_MS, HOUR_MS};

pub const SHIPPED: &str = include_str!("../../config/segments.toml");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Num(f64),
    Text(String),
    Bool(bool),
}

/// What a rule looks at.
#[derive(Debug, Clone, PartialEq)]
pub enum Fact {
    /// Time since an event, in days or hours; absent (never happened) counts as infinitely long.
    Since {
        what: Since,
        unit_ms: i64,
    },
    Number(&'static str),
    Text(&'static str),
    Flag(&'static str),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Since {
    FirstSeen,
    LastSeen,
    LastOrder,
    ProductView,
    CategoryView(String),
    CartAbandoned,
}

const NUMBERS: [&str; 12] = [
    "orders",
    "revenue",
    "average_order_value",
    "sessions",
    "active_days",
    "points_balance",
    "vouchers_used",
    "vouchers_claimed",
    "recency_score",
    "frequency_score",
    "monetary_score",
    "cart_adds",
];
const TEXTS: [&str; 2] = ["lifecycle", "funnel_stage"];
const FLAGS: [&str; 3] = ["oa_following", "birthday_this_month", "has_phone"];

fn parse_fact(name: &str) -> anyhow::Result<Fact> {
    let since = |what, unit_ms| Ok(Fact::Since { what, unit_ms });
    match name {
        "days_since_first_seen" => return since(Since::FirstSeen, DAY_MS),
        "days_since_last_seen" => return since(Since::LastSeen, DAY_MS),
        "days_since_last_order" => return since(Since::LastOrder, DAY_MS),
        "days_since_product_view" => return since(Since::ProductView, DAY_MS),
        "hours_since_cart_abandoned" => return since(Since::CartAbandoned, HOUR_MS),
        _ => {}
    }
    if let Some(c) = name.strip_prefix("days_since_viewed:") {
        if c.is_empty() {
            bail!("days_since_viewed: needs a category, e.g. days_since_viewed:coffee");
        }
        return since(Since::CategoryView(c.to_string()), DAY_MS);
    }
    if let Some(n) = NUMBERS.iter().find(|n| **n == name) {
        return Ok(Fact::Number(n));
    }
    if let Some(n) = TEXTS.iter().find(|n| **n == name) {
        return Ok(Fact::Text(n));
    }
    if let Some(n) = FLAGS.iter().find(|n| **n == name) {
        return Ok(Fact::Flag(n));
    }
    bail!(
        "unknown fact {name:?}; known: days_since_first_seen, days_since_last_seen, days_since_last_order, days_since_product_view, days_since_viewed:<category>, hours_since_cart_abandoned, {}, {}, {}",
        NUMBERS.join(", "),
        TEXTS.join(", "),
        FLAGS.join(", ")
    )
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub fact: Fact,
    pub op: Op,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub name: String,
    pub description: String,
    pub purpose: Option<String>,
    pub rules: Vec<Rule>,
    /// Paused by an admin (`zmp.campaigns.v1`): not evaluated; its members stay as they were.
    pub paused: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Segments {
    pub list: Vec<Segment>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRule {
    fact: String,
    op: String,
    value: toml::Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSegment {
    name: String,
    #[serde(default)]
    description: String,
    purpose: Option<String>,
    when: Vec<FileRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    segment: Vec<FileSegment>,
}

impl Segments {
    /// The segments of a config file, or the shipped ones without one.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Segments> {
        match path {
            None => Self::parse(SHIPPED).context("the shipped config/segments.toml"),
            Some(p) => {
                let text = std::fs::read_to_string(p).with_context(|| format!("reading the segments file {}", p.display()))?;
                Self::parse(&text).with_context(|| format!("in the segments file {}", p.display()))
            }
        }
    }

    pub fn parse(text: &str) -> anyhow::Result<Segments> {
        let file: File = toml::from_str(text)?;
        let mut list = Vec::new();
        for s in file.segment {
            if list.iter().any(|x: &Segment| x.name == s.name) {
                bail!("segment {:?} is defined twice", s.name);
            }
            let name = s.name.clone();
            list.push(parse_one(s).map_err(|e| anyhow::anyhow!("segment {name:?}: {e}"))?);
        }
        Ok(Segments { list })
    }

    /// The file's segments as JSON definitions (name, definition), in its order: the seed of
    /// `zmp.campaigns.v1` (kind `segment`).
    pub fn seeds(text: &str) -> anyhow::Result<Vec<(String, serde_json::Value)>> {
        let table: toml::Table = toml::from_str(text)?;
        let mut out = Vec::new();
        if let Some(toml::Value::Array(list)) = table.get("segment") {
            for t in list {
                let name = t.get("name").and_then(toml::Value::as_str).unwrap_or_default().to_string();
                out.push((name, serde_json::to_value(t)?));
            }
        }
        Ok(out)
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

/// One segment checked whole; the error names the field.
fn parse_one(s: FileSegment) -> Result<Segment, sinks::campaigns::FieldError> {
    use sinks::campaigns::FieldError;
    let err = |field: String, why: String| FieldError { field, why };
    if s.name.is_empty() || s.name.len() > 64 || !s.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Err(err(
            "name".into(),
            format!("{:?}: 1 to 64 letters, digits, _ and - (it is part of Kafka keys and file names)", s.name),
        ));
    }
    if s.when.is_empty() {
        return Err(err("when".into(), "no rules: a segment needs at least one".into()));
    }
    if s.when.len() > 20 {
        return Err(err("when".into(), "at most 20 rules".into()));
    }
    let mut rules = Vec::new();
    for (i, r) in s.when.into_iter().enumerate() {
        let at = |f: &str| format!("when[{i}].{f}");
        let fact = parse_fact(&r.fact).map_err(|e| err(at("fact"), e.to_string()))?;
        let op = match r.op.as_str() {
            "<" => Op::Lt,
            "<=" => Op::Le,
            ">" => Op::Gt,
            ">=" => Op::Ge,
            "==" => Op::Eq,
            "!=" => Op::Ne,
            other => return Err(err(at("op"), format!("{other:?} is not one of < <= > >= == !="))),
        };
        let value = match (&fact, r.value) {
            (Fact::Since { .. } | Fact::Number(_), toml::Value::Integer(i)) => Value::Num(i as f64),
            (Fact::Since { .. } | Fact::Number(_), toml::Value::Float(f)) if f.is_finite() => Value::Num(f),
            (Fact::Text(_), toml::Value::String(t)) if matches!(op, Op::Eq | Op::Ne) => Value::Text(t),
            (Fact::Flag(_), toml::Value::Boolean(b)) if matches!(op, Op::Eq | Op::Ne) => Value::Bool(b),
            (_, v) => return Err(err(at("value"), format!("fact {:?} cannot be compared with {op:?} to {v}", r.fact))),
        };
        rules.push(Rule { fact, op, value });
    }
    Ok(Segment { name: s.name, description: s.description, purpose: s.purpose, rules, paused: false })
}

/// A segment from its JSON definition (the admin API's, `zmp.campaigns.v1`'s), checked whole,
/// the field at fault named.
pub fn from_json(value: &serde_json::Value) -> Result<Segment, sinks::campaigns::FieldError> {
    let s: FileSegment = sinks::campaigns::deserialize_named(value)?;
    parse_one(s)
}

/// The segments of a file (or the shipped ones), read once per process: every task of a member
/// sees the same definitions even if the file changes while it runs.
pub fn loaded(path: Option<&Path>) -> anyhow::Result<std::sync::Arc<Segments>> {
    static LOADED: std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<Option<std::path::PathBuf>, std::sync::Arc<Segments>>>> =
        std::sync::LazyLock::new(Default::default);
    let mut loaded = LOADED.lock().expect("segments lock");
    let key = path.map(Path::to_path_buf);
    if let Some(s) = loaded.get(&key) {
        return Ok(s.clone());
    }
    let s = std::sync::Arc::new(Segments::load(path)?);
    loaded.insert(key, s.clone());
    Ok(s)
}

/// Where a member's segments come from: a file read once (tests, tools), or `zmp.campaigns.v1`
/// followed live, per app: the seed's (the file's) and the app's own, paused ones marked.
#[derive(Clone)]
pub enum Source {
    Fixed(std::sync::Arc<Segments>),
    Live(std::sync::Arc<LiveSegments>),
}

/// The segments in force per app, rebuilt from the catalog when it moved.
pub struct LiveSegments {
    catalog: std::sync::Arc<sinks::definitions::Catalog>,
    by_app: std::sync::Mutex<std::collections::HashMap<String, (u64, std::sync::Arc<Segments>)>>,
}

impl LiveSegments {
    pub fn new(catalog: std::sync::Arc<sinks::definitions::Catalog>) -> LiveSegments {
        LiveSegments { catalog, by_app: Default::default() }
    }
}

impl Source {
    /// The segments in force for `app`.
    pub fn for_app(&self, app: &str) -> std::sync::Arc<Segments> {
        let live = match self {
            Source::Fixed(s) => return s.clone(),
            Source::Live(l) => l,
        };
        let generation = live.catalog.generation(sinks::definitions::SEGMENT);
        let mut by_app = live.by_app.lock().expect("segments lock");
        if let Some((g, s)) = by_app.get(app)
            && *g == generation
        {
            return s.clone();
        }
        let mut list = Vec::new();
        for d in live.catalog.effective(app, sinks::definitions::SEGMENT) {
            // Checked when written; one this version cannot read is left out (and said).
            match serde_json::from_str::<serde_json::Value>(&d.definition)
                .map_err(|e| e.to_string())
                .and_then(|v| from_json(&v).map_err(|e| e.to_string()))
            {
                Ok(mut seg) if seg.name == d.name => {
                    seg.paused = d.paused;
                    list.push(seg);
                }
                // One this member cannot read (a newer version's fact, during an upgrade) is
                // held as paused: its members stay, none enter or leave here.
                Ok(_) | Err(_) => {
                    tracing::warn!(app, segment = %d.name, "a segment definition this member cannot evaluate: its members are kept as they are");
                    list.push(Segment { name: d.name.clone(), description: String::new(), purpose: None, rules: Vec::new(), paused: true });
                }
            }
        }
        let s = std::sync::Arc::new(Segments { list });
        by_app.insert(app.to_string(), (generation, s.clone()));
        s
    }

    /// Moves when the definitions may have changed (never, for a file).
    pub fn generation(&self) -> u64 {
        match self {
            Source::Fixed(_) => 0,
            Source::Live(l) => l.catalog.generation(sinks::definitions::SEGMENT),
        }
    }
}

/// What the rules are evaluated against: a profile's facts at a time.
pub trait Facts {
    /// When the event happened, if it did.
    fn since(&self, what: &Since) -> Option<i64>;
    fn number(&self, name: &str) -> f64;
    fn text(&self, name: &str) -> &str;
    /// `birthday_this_month` is given the evaluation time.
    fn flag(&self, name: &str, at: i64) -> bool;
    fn granted(&self, purpose: &str) -> bool;
}

fn compare<T: PartialOrd>(a: T, op: Op, b: T) -> bool {
    match op {
        Op::Lt => a < b,
        Op::Le => a <= b,
        Op::Gt => a > b,
        Op::Ge => a >= b,
        Op::Eq => a == b,
        Op::Ne => a != b,
    }
}

impl Rule {
    pub fn holds(&self, f: &dyn Facts, at: i64) -> bool {
        match (&self.fact, &self.value) {
            (Fact::Since { what, unit_ms }, Value::Num(v)) => {
                let elapsed = f.since(what).filter(|t| *t <= at).map_or(f64::INFINITY, |t| (at - t) as f64 / *unit_ms as f64);
                compare(elapsed, self.op, *v)
            }
            (Fact::Number(n), Value::Num(v)) => compare(f.number(n), self.op, *v),
            (Fact::Text(n), Value::Text(v)) => compare(f.text(n), self.op, v.as_str()),
            (Fact::Flag(n), Value::Bool(v)) => compare(f.flag(n, at), self.op, *v),
            _ => false,
        }
    }

    /// Times after which this rule may change its answer with time alone.
    pub fn boundaries(&self, f: &dyn Facts, out: &mut Vec<i64>) {
        if let (Fact::Since { what, unit_ms }, Value::Num(v)) = (&self.fact, &self.value)
            && let Some(t) = f.since(what)
        {
            let edge = t + (v * *unit_ms as f64).ceil() as i64;
            // An event in the future of the evaluation time starts counting when it comes;
            // `<` and `>=` flip at the edge, `<=` and `>` just after it.
            out.extend([t, edge, edge + 1]);
        }
    }
}

impl Segment {
    pub fn holds(&self, f: &dyn Facts, at: i64) -> bool {
        self.purpose.as_deref().is_none_or(|p| f.granted(p)) && self.rules.iter().all(|r| r.holds(f, at))
    }

    pub fn uses_birthday(&self) -> bool {
        self.rules.iter().any(|r| r.fact == Fact::Flag("birthday_this_month"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct F {
        last_order: Option<i64>,
        viewed_coffee: Option<i64>,
        lifecycle: &'static str,
        monetary: f64,
        marketing: bool,
    }

    impl Facts for F {
        fn since(&self, what: &Since) -> Option<i64> {
            match what {
                Since::LastOrder => self.last_order,
                Since::CategoryView(c) if c == "coffee" => self.viewed_coffee,
                _ => None,
            }
        }
        fn number(&self, name: &str) -> f64 {
            if name == "monetary_score" { self.monetary } else { 0.0 }
        }
        fn text(&self, _: &str) -> &str {
            self.lifecycle
        }
        fn flag(&self, _: &str, _: i64) -> bool {
            false
        }
        fn granted(&self, purpose: &str) -> bool {
            purpose == "marketing" && self.marketing
        }
    }

    #[test]
    fn the_shipped_segments_parse() {
        let s = Segments::load(None).unwrap();
        let names: Vec<&str> = s.list.iter().map(|s| s.name.as_str()).collect();
        for want in ["viewed_no_order_7d", "high_value", "at_risk", "cart_abandoned_24h", "birthday_this_month", "new_first_week"] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
    }

    #[test]
    fn rules_hold_by_time_and_consent() {
        let s = Segments::parse(
            r#"
            [[segment]]
            name = "coffee_no_order"
            purpose = "marketing"
            when = [
              { fact = "days_since_viewed:coffee", op = "<", value = 7 },
              { fact = "days_since_last_order", op = ">=", value = 7 },
            ]
            "#,
        )
        .unwrap();
        let seg = &s.list[0];
        let d = DAY_MS;
        let mut f = F { last_order: None, viewed_coffee: Some(10 * d), lifecycle: "active", monetary: 1.0, marketing: true };
        assert!(seg.holds(&f, 12 * d), "viewed 2 days ago, never ordered");
        assert!(!seg.holds(&f, 17 * d), "the view is 7 days old");
        f.last_order = Some(8 * d);
        assert!(!seg.holds(&f, 12 * d), "ordered 4 days ago");
        assert!(seg.holds(&f, 15 * d + 1), "the order is 7 days old, the view 5");
        f.marketing = false;
        assert!(!seg.holds(&f, 15 * d + 1), "no marketing consent");
        let mut b = Vec::new();
        for r in &seg.rules {
            r.boundaries(&f, &mut b);
        }
        assert!(b.contains(&(17 * d)) && b.contains(&(15 * d)), "{b:?}");
    }

    #[test]
    fn bad_configs_are_refused_with_the_reason() {
        for (text, says) in [
            (
                r#"[[segment]]
name = "x"
when = [{ fact = "nope", op = "<", value = 1 }]"#,
                "unknown fact",
            ),
            (
                r#"[[segment]]
name = "x"
when = [{ fact = "lifecycle", op = "<", value = "new" }]"#,
                "cannot be compared",
            ),
            (
                r#"[[segment]]
name = "x y"
when = [{ fact = "orders", op = ">", value = 1 }]"#,
                "letters, digits",
            ),
            (
                r#"[[segment]]
name = "x"
when = []"#,
                "no rules",
            ),
            (
                r#"[[segment]]
name = "x"
when = [{ fact = "orders", op = "~", value = 1 }]"#,
                "not one of",
            ),
        ] {
            let err = format!("{:#}", Segments::parse(text).unwrap_err());
            assert!(err.contains(says), "{err}");
        }
    }

    #[test]
    fn a_segment_from_json_is_checked_with_the_field_named_and_the_file_seeds_it() {
        let ok = from_json(&serde_json::json!({"name": "vip", "when": [{"fact": "monetary_score", "op": ">=", "value": 4}]})).unwrap();
        assert_eq!((ok.name.as_str(), ok.rules.len(), ok.paused), ("vip", 1, false));
        let field = |v: serde_json::Value| from_json(&v).unwrap_err().field;
        assert_eq!(field(serde_json::json!({"name": "a b", "when": [{"fact": "orders", "op": ">", "value": 1}]})), "name");
        assert_eq!(field(serde_json::json!({"name": "x", "when": []})), "when");
        assert_eq!(field(serde_json::json!({"name": "x", "when": [{"fact": "shoe_size", "op": ">", "value": 1}]})), "when[0].fact");
        assert_eq!(field(serde_json::json!({"name": "x", "when": [{"fact": "orders", "op": "~", "value": 1}]})), "when[0].op");
        assert_eq!(field(serde_json::json!({"name": "x", "when": [{"fact": "orders", "op": ">", "value": "many"}]})), "when[0].value");
        assert_eq!(field(serde_json::json!({"name": "x", "colour": "red", "when": []})), "colour");
        assert_eq!(field(serde_json::json!({"when": []})), "name");
        let seeds = Segments::seeds(SHIPPED).unwrap();
        let shipped = Segments::parse(SHIPPED).unwrap();
        assert_eq!(
            seeds.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            shipped.list.iter().map(|s| s.name.as_str()).collect::<Vec<_>>()
        );
        for ((_, v), s) in seeds.iter().zip(&shipped.list) {
            assert_eq!(&from_json(v).unwrap(), s, "a seed reads back as the file's segment");
        }
    }
}
