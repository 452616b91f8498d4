//! Labels, paths and names, exactly as albatross defines them
//! (`spec/names-and-policies.md` §1–3, `spec/wire.md` §9).
//!
//! A [`Name`] is a [`Path`] (a list of labels, possibly empty = the root) plus an
//! optional [`Label`]. Unlike albatross (Note N5), petrel keeps the path name `foo:` and
//! the root-level unikernel `:foo` distinct everywhere: they are different values here
//! and different keys in the resource trie.

use std::fmt;

use serde::{Serialize, Serializer};

/// Maximum length of a label in octets (albatross: 1 to 63).
pub const MAX_LABEL_LEN: usize = 63;

/// Longest file name [`Name::file_name`] produces, leaving room below the usual 255-octet
/// limit of Linux file systems for suffixes such as `.img` or `.tmp.<n>`.
pub const MAX_FILE_NAME_LEN: usize = 200;

/// Error text for an invalid label (albatross's words).
pub const INVALID_LABEL: &str = "invalid label (only [a-zA-Z0-9-.] allowed, 1 to 63 chars)";

/// Why a label, path or name did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// The input was the empty string.
    #[error("empty name")]
    Empty,
    /// A label is empty, longer than 63 octets, starts with `-` or has a character outside
    /// `[A-Za-z0-9.-]`.
    #[error("{}", INVALID_LABEL)]
    InvalidLabel,
    /// A path (the part of a path name before its final `:`) contains an invalid label.
    #[error("invalid path: {}", INVALID_LABEL)]
    InvalidPath,
    /// A labelled name has an invalid label or path component.
    #[error("invalid name")]
    InvalidName,
    /// The name is too long to be turned into a file name.
    #[error("name too long ({0} octets, at most {max} allowed as a file name)", max = MAX_FILE_NAME_LEN)]
    TooLongForFile(usize),
}

/// One label: 1–63 octets of `[a-z0-9.-]` (upper case is folded on parse), not starting
/// with `-`. `.` and `..` are valid labels, as in albatross.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Label(String);

impl Label {
    /// Parses a label, folding ASCII upper case to lower case.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let bytes = s.as_bytes();
        let valid = !bytes.is_empty()
            && bytes.len() <= MAX_LABEL_LEN
            && bytes.first() != Some(&b'-')
            && bytes
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if valid {
            Ok(Self(s.to_ascii_lowercase()))
        } else {
            Err(NameError::InvalidLabel)
        }
    }

    /// The label's text (lower case).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A path: a list of labels from the root down. The empty path is the root.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Path(Vec<Label>);

impl Path {
    /// The root path (no labels).
    pub fn root() -> Self {
        Self(Vec::new())
    }

    /// Builds a path from labels, root first.
    pub fn from_labels(labels: Vec<Label>) -> Self {
        Self(labels)
    }

    /// Parses the text form: labels joined by `:`; one leading empty component is dropped,
    /// so `""` is the root and `":a:b"` equals `"a:b"`.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let mut parts: Vec<&str> = s.split(':').collect();
        if parts.first() == Some(&"") {
            parts.remove(0);
        }
        parts
            .into_iter()
            .map(|p| Label::parse(p).map_err(|_| NameError::InvalidPath))
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    /// The labels, root first.
    pub fn labels(&self) -> &[Label] {
        &self.0
    }

    /// True for the root path.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The path with `label` appended.
    pub fn child(&self, label: Label) -> Self {
        let mut labels = self.0.clone();
        labels.push(label);
        Self(labels)
    }

    /// The parent path; the parent of the root is the root.
    pub fn parent(&self) -> Self {
        let mut labels = self.0.clone();
        labels.pop();
        Self(labels)
    }

    /// True if `self` equals `other` or lies below it.
    pub fn starts_with(&self, other: &Path) -> bool {
        self.0.starts_with(&other.0)
    }

    /// `self` with the prefix `base` removed, or `None` if `self` is not below `base`.
    pub fn strip_prefix(&self, base: &Path) -> Option<Path> {
        self.0
            .strip_prefix(base.0.as_slice())
            .map(|rest| Self(rest.to_vec()))
    }

    /// Text form: labels joined with `:` (root = empty string).
    pub fn text(&self) -> String {
        let labels: Vec<&str> = self.0.iter().map(Label::as_str).collect();
        labels.join(":")
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
    }
}

/// A name: a path plus an optional label (the unikernel or block device).
///
/// Text form: `path-text ":" label-or-empty`; root = `":"`, path `foo` = `"foo:"`,
/// root-level unikernel `hello` = `":hello"`, unikernel `web` under `foo:bar` =
/// `"foo:bar:web"`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name {
    path: Path,
    label: Option<Label>,
}

impl Name {
    /// The root path name `":"`.
    pub fn root() -> Self {
        Self {
            path: Path::root(),
            label: None,
        }
    }

    /// A path name (no label).
    pub fn of_path(path: Path) -> Self {
        Self { path, label: None }
    }

    /// A labelled name `path:label`.
    pub fn labelled(path: Path, label: Label) -> Self {
        Self {
            path,
            label: Some(label),
        }
    }

    /// Parses the textual form (`spec/wire.md` §9): `""` is an error ("empty name"); a
    /// trailing `:` makes the rest a path; otherwise the string is split on `:`, one
    /// leading empty component is dropped, the last component is the label.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        if let Some(rest) = s.strip_suffix(':') {
            return Path::parse(rest).map(Self::of_path);
        }
        let mut parts: Vec<&str> = s.split(':').collect();
        if parts.first() == Some(&"") {
            parts.remove(0);
        }
        let last = parts.pop().ok_or(NameError::InvalidName)?;
        let label = Label::parse(last).map_err(|_| NameError::InvalidName)?;
        let path = parts
            .into_iter()
            .map(|p| Label::parse(p).map_err(|_| NameError::InvalidName))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::labelled(Path(path), label))
    }

    /// The path part.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The label, if this is a labelled name.
    pub fn label(&self) -> Option<&Label> {
        self.label.as_ref()
    }

    /// True if the name has no label (it names a path).
    pub fn is_path(&self) -> bool {
        self.label.is_none()
    }

    /// The textual form.
    pub fn text(&self) -> String {
        let mut s = self.path.text();
        s.push(':');
        if let Some(label) = &self.label {
            s.push_str(label.as_str());
        }
        s
    }

    /// True if this name lies in the subtree of `path` (a labelled name in `path` itself
    /// counts, as does any name below it).
    pub fn is_below(&self, path: &Path) -> bool {
        self.path.starts_with(path)
    }

    /// This name relative to `base` (the node `base` itself becomes the root), or `None`
    /// if it is not below `base`.
    pub fn relative_to(&self, base: &Path) -> Option<Name> {
        self.path.strip_prefix(base).map(|path| Self {
            path,
            label: self.label.clone(),
        })
    }

    /// A file name for this name that can never be `.`, `..`, contain `/` or `..`, or start
    /// with a dot, and that is distinct for distinct names.
    ///
    /// It is the text form with every `.` replaced by `_` (a character labels cannot
    /// contain, so the mapping is injective): `foo:web` → `foo:web`,
    /// `my.app:.` → `my_app:_`. Names longer than [`MAX_FILE_NAME_LEN`] are refused.
    pub fn file_name(&self) -> Result<String, NameError> {
        let text = self.text();
        if text.len() > MAX_FILE_NAME_LEN {
            return Err(NameError::TooLongForFile(text.len()));
        }
        Ok(text.replace('.', "_"))
    }

    /// Inverse of [`Name::file_name`]; also accepts albatross's own file names (the plain
    /// text form, which may contain dots).
    pub fn from_file_name(file: &str) -> Result<Self, NameError> {
        if !file.contains(':') {
            return Err(NameError::InvalidName);
        }
        Self::parse(&file.replace('_', "."))
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
    }
}

impl Serialize for Name {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text())
    }
}

impl Serialize for Label {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl Serialize for Path {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Name {
        Name::parse(s).unwrap()
    }

    #[test]
    fn parses_the_documented_forms() {
        assert_eq!(name(":").text(), ":");
        assert!(name(":").path().is_root() && name(":").is_path());
        assert_eq!(name("foo:").text(), "foo:");
        assert!(name("foo:").is_path());
        assert_eq!(name("foo:bar:").text(), "foo:bar:");
        assert_eq!(name(":hello").text(), ":hello");
        assert_eq!(name("hello"), name(":hello"));
        assert_eq!(name("foo:bar:web").text(), "foo:bar:web");
        assert_eq!(name("Foo:WEB").text(), "foo:web");
        assert_eq!(name("foo.hello").text(), ":foo.hello");
        assert_eq!(name(":a:b:").text(), "a:b:");
    }

    #[test]
    fn path_and_root_level_unikernel_are_distinct() {
        assert_ne!(name("foo:"), name(":foo"));
        assert_ne!(
            name("foo:").file_name().unwrap(),
            name(":foo").file_name().unwrap()
        );
    }

    #[test]
    fn errors_use_albatross_texts() {
        assert_eq!(Name::parse("").unwrap_err().to_string(), "empty name");
        assert_eq!(Name::parse("::x").unwrap_err().to_string(), "invalid name");
        assert_eq!(Name::parse("a/b").unwrap_err().to_string(), "invalid name");
        assert_eq!(
            Name::parse("a/b:").unwrap_err().to_string(),
            "invalid path: invalid label (only [a-zA-Z0-9-.] allowed, 1 to 63 chars)"
        );
        assert_eq!(
            Name::parse("::").unwrap_err(),
            NameError::InvalidPath,
            "an empty label inside a path"
        );
        assert_eq!(
            Label::parse("-x").unwrap_err().to_string(),
            "invalid label (only [a-zA-Z0-9-.] allowed, 1 to 63 chars)"
        );
        assert!(Label::parse(&"a".repeat(63)).is_ok());
        assert!(Label::parse(&"a".repeat(64)).is_err());
        assert!(Label::parse("").is_err());
        assert!(Label::parse("a\0").is_err());
        assert!(Label::parse("é").is_err());
    }

    #[test]
    fn dots_are_valid_labels() {
        for l in [".", "..", "a.", ".a", "a..b", "x-"] {
            assert!(Label::parse(l).is_ok(), "{l}");
        }
    }

    #[test]
    fn file_names_are_safe_and_injective() {
        for (n, f) in [
            ("..:..", "__:__"),
            (":.", ":_"),
            ("foo:web", "foo:web"),
            (".hidden:x", "_hidden:x"),
            ("my.nice.unikernel", ":my_nice_unikernel"),
        ] {
            let file = name(n).file_name().unwrap();
            assert_eq!(file, f);
            assert!(!file.contains('/') && !file.contains("..") && !file.starts_with('.'));
            assert_eq!(Name::from_file_name(&file).unwrap(), name(n));
        }
        // albatross's own file names (dots kept) are read as well.
        assert_eq!(
            Name::from_file_name("foo:my.disk").unwrap(),
            name("foo:my.disk")
        );
        let long = format!("{0}:{0}:{0}:{0}", "a".repeat(63));
        assert!(matches!(
            name(&long).file_name(),
            Err(NameError::TooLongForFile(_))
        ));
    }

    #[test]
    fn relative_names() {
        let base = Path::parse("a").unwrap();
        assert_eq!(name("a:b:c").relative_to(&base).unwrap().text(), "b:c");
        assert_eq!(name("a:").relative_to(&base).unwrap().text(), ":");
        assert_eq!(name("a:x").relative_to(&base).unwrap().text(), ":x");
        assert!(name("b:x").relative_to(&base).is_none());
    }
}
