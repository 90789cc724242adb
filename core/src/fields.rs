//! The field-value pairs of a stream entry.

use bytes::Bytes;

/// The ordered field-value pairs of one stream entry.
///
/// Redis keeps an entry's fields in the order they were added and allows a
/// name to repeat; so does `Fields`. Names and values are binary-safe
/// [`Bytes`], so cloning an entry (as the memory backend does on every read)
/// copies no payload.
///
/// ```
/// use crewq_core::Fields;
/// let fields = Fields::new().with("data", r#"{"task_id":"t1"}"#).with("n", "1");
/// assert_eq!(fields.get("data").map(|v| &v[..]), Some(&br#"{"task_id":"t1"}"#[..]));
/// assert_eq!(fields.get_str("n"), Some("1"));
/// assert_eq!(fields.len(), 2);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Fields(Vec<(Bytes, Bytes)>);

impl Fields {
    /// No fields. (An entry needs at least one before it can be added.)
    pub const fn new() -> Self {
        Fields(Vec::new())
    }

    /// Appends a pair and returns `self`, for building entries inline.
    #[must_use]
    pub fn with(mut self, name: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        self.push(name, value);
        self
    }

    /// Appends a pair.
    pub fn push(&mut self, name: impl Into<Bytes>, value: impl Into<Bytes>) {
        self.0.push((name.into(), value.into()));
    }

    /// The value of the first field called `name`.
    pub fn get(&self, name: &str) -> Option<&Bytes> {
        self.0
            .iter()
            .find(|(n, _)| n.as_ref() == name.as_bytes())
            .map(|(_, v)| v)
    }

    /// The value of the first field called `name`, if it is UTF-8.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The pairs in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&Bytes, &Bytes)> {
        self.0.iter().map(|(n, v)| (n, v))
    }

    /// How many pairs.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The total size of names and values in bytes.
    pub fn byte_len(&self) -> usize {
        self.0.iter().map(|(n, v)| n.len() + v.len()).sum()
    }
}

impl<N: Into<Bytes>, V: Into<Bytes>> FromIterator<(N, V)> for Fields {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        Fields(
            iter.into_iter()
                .map(|(n, v)| (n.into(), v.into()))
                .collect(),
        )
    }
}

impl IntoIterator for Fields {
    type Item = (Bytes, Bytes);
    type IntoIter = std::vec::IntoIter<(Bytes, Bytes)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}
