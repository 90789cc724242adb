//! A strict reader of the Prometheus text exposition format (0.0.4), for
//! checking `/metrics`: every line must be blank, a `# HELP` or `# TYPE`
//! comment, or a sample of a family whose `# TYPE` came before; anything
//! else fails the test rather than being skipped.

use std::collections::BTreeMap;

/// One sample line.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed scrape: each family's type, and every sample in order.
#[derive(Debug, Default)]
pub struct Scrape {
    pub types: BTreeMap<String, String>,
    pub samples: Vec<Sample>,
}

impl Scrape {
    /// The value of `name` with exactly `labels`; panics when absent or
    /// present twice.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let wanted: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let found: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| s.name == name && s.labels == wanted)
            .collect();
        match found.as_slice() {
            [one] => one.value,
            other => panic!("{name}{wanted:?}: {} samples, want 1", other.len()),
        }
    }
}

/// Parses `text`, panicking (with the line) at the first thing that is not
/// the format.
pub fn parse(text: &str) -> Scrape {
    let mut scrape = Scrape::default();
    for (n, line) in text.lines().enumerate() {
        let fail = |why: &str| panic!("/metrics line {}: {why}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix("# ") {
            let mut words = comment.splitn(3, ' ');
            match (words.next(), words.next(), words.next()) {
                (Some("HELP"), Some(name), Some(_)) if is_name(name) => {}
                (Some("TYPE"), Some(name), Some(kind)) if is_name(name) => {
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        fail("unknown type");
                    }
                    if scrape
                        .types
                        .insert(name.to_owned(), kind.to_owned())
                        .is_some()
                    {
                        fail("a second TYPE for one family");
                    }
                }
                _ => fail("a comment that is neither HELP nor TYPE"),
            }
            continue;
        }
        let Some((sample, rest)) = sample(line) else {
            fail("not a sample");
            unreachable!()
        };
        if !rest.is_empty() && rest.parse::<i64>().is_err() {
            fail("trailing text that is not a timestamp");
        }
        let family = family(&scrape.types, &sample.name)
            .unwrap_or_else(|| panic!("/metrics line {}: no TYPE before {line:?}", n + 1));
        if family.1 == "histogram"
            && sample.name.ends_with("_bucket")
            && !sample.labels.contains_key("le")
        {
            fail("a bucket without le");
        }
        scrape.samples.push(sample);
    }
    scrape
}

/// The family a sample belongs to and its type: its own name, or for a
/// histogram's or summary's series its name less `_bucket`, `_sum`, `_count`.
fn family<'a>(types: &'a BTreeMap<String, String>, name: &str) -> Option<(&'a str, &'a str)> {
    if let Some((family, kind)) = types.get_key_value(name) {
        return Some((family, kind));
    }
    ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
        let base = name.strip_suffix(suffix)?;
        let (family, kind) = types.get_key_value(base)?;
        matches!(kind.as_str(), "histogram" | "summary").then_some((family.as_str(), kind.as_str()))
    })
}

fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `name{labels} value`, and what follows the value (a timestamp or
/// nothing).
fn sample(line: &str) -> Option<(Sample, &str)> {
    let end = line.find(['{', ' '])?;
    let name = &line[..end];
    if !is_name(name) {
        return None;
    }
    let mut rest = &line[end..];
    let mut labels = BTreeMap::new();
    if let Some(mut inner) = rest.strip_prefix('{') {
        loop {
            if let Some(after) = inner.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = inner.find('=')?;
            let key = &inner[..eq];
            if !is_name(key) {
                return None;
            }
            let (value, after) = quoted(inner[eq + 1..].strip_prefix('"')?)?;
            if labels.insert(key.to_owned(), value).is_some() {
                return None;
            }
            inner = after.strip_prefix(',').unwrap_or(after);
        }
    }
    let rest = rest.strip_prefix(' ')?;
    let (value, tail) = rest.split_once(' ').unwrap_or((rest, ""));
    let value = match value {
        "NaN" => f64::NAN,
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        number => number.parse().ok()?,
    };
    Some((
        Sample {
            name: name.to_owned(),
            labels,
            value,
        },
        tail,
    ))
}

/// A label value up to its closing quote, unescaped, and what follows.
fn quoted(text: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((value, &text[i + 1..])),
            '\\' => match chars.next()?.1 {
                '\\' => value.push('\\'),
                '"' => value.push('"'),
                'n' => value.push('\n'),
                _ => return None,
            },
            c => value.push(c),
        }
    }
    None
}
