//! Where things lie in a JSON text, found by a maintained parser (`jiter`, which reports byte positions), so
//! that a record can be kept verbatim for `raw` and its fields read from their own text without a second
//! parse. Nothing here knows JSON's grammar: jiter checks it, serde_json unescapes the odd string.

use std::borrow::Cow;

use jiter::{Jiter, JiterError, Peek};

/// Where a piece of text lies in the document it was found in (byte offsets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Span {
        Span { start: start as u32, end: end as u32 }
    }

    /// The spanned text of `doc` (the document the span was found in).
    #[inline]
    pub fn of<'a>(&self, doc: &'a str) -> &'a str {
        &doc[self.start as usize..self.end as usize]
    }
}

/// One member of an object: its key between the quotes, and its value's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    pub key: Span,
    pub value: Span,
}

/// One member of an object, read on demand: a record has about 60 fields and a sync types 18, so a field that
/// is only matched by its key costs no more than that match.
#[derive(Debug, Clone, Copy)]
pub struct Field<'a> {
    body: &'a str,
    member: Member,
}

impl<'a> Field<'a> {
    /// `member` of the document `body` it was found in.
    pub fn new(body: &'a str, member: Member) -> Field<'a> {
        Field { body, member }
    }

    /// The key between its quotes, when it has no escapes (then it is the field's name).
    #[inline]
    pub fn plain_key(&self) -> Option<&'a [u8]> {
        let key = self.member.key.of(self.body).as_bytes();
        (!key.contains(&b'\\')).then_some(key)
    }

    /// The key between its quotes, as written (escapes kept). A name without backslashes (every standard
    /// field's) matches it byte for byte or not at all.
    #[inline]
    pub fn key_bytes(&self) -> &'a [u8] {
        self.member.key.of(self.body).as_bytes()
    }

    /// The field is called `name`.
    #[inline]
    pub fn is(&self, name: &str) -> bool {
        let key = self.key_bytes();
        // Up to its first escape a key is its name, byte for byte: most keys differ from `name` before that (in
        // their first bytes), and only a key that reaches an escape is unescaped to compare.
        let name_bytes = name.as_bytes();
        let same = key.iter().zip(name_bytes).take_while(|(k, n)| k == n && **k != b'\\').count();
        match key.get(same) {
            None => same == name_bytes.len(),
            Some(b'\\') => self.name() == name,
            Some(_) => false,
        }
    }

    /// The field's name (the key unescaped).
    pub fn name(&self) -> Cow<'a, str> {
        let key = self.member.key.of(self.body);
        if key.contains('\\') {
            let literal = &self.body[self.member.key.start as usize - 1..self.member.key.end as usize + 1];
            string(literal).unwrap_or(Cow::Borrowed(key))
        } else {
            Cow::Borrowed(key)
        }
    }

    /// The value's JSON text.
    #[inline]
    pub fn value(&self) -> &'a str {
        self.member.value.of(self.body)
    }

    /// The value's string, when it is a string without escapes (nothing left to check or unescape). Looked for
    /// only when a field is read: most of a record's are only passed.
    #[inline]
    pub fn plain_string(&self) -> Option<&'a str> {
        let inner = self.value().strip_prefix('"')?.strip_suffix('"')?;
        (!inner.as_bytes().contains(&b'\\')).then_some(inner)
    }
}

/// Why a text is not JSON, and where: jiter's words and position.
pub fn describe(doc: &str, e: &JiterError) -> String {
    format!("{} at {}", e.error_type, jiter::LinePosition::find(doc.as_bytes(), e.index))
}

/// jiter over `text`, starting at byte `offset` of `doc`: positions it reports are `doc`'s.
pub struct Reader<'a> {
    pub jiter: Jiter<'a>,
    base: usize,
}

impl<'a> Reader<'a> {
    pub fn new(text: &'a str) -> Reader<'a> {
        Reader { jiter: Jiter::new(text.as_bytes()), base: text.as_ptr() as usize }
    }

    pub fn index(&self) -> usize {
        self.jiter.current_index()
    }

    /// Reads the members of the object that starts here (the `{` was peeked), handing each to `each`. On an
    /// error, the key of the member being read, if it got that far.
    pub fn members(&mut self, mut each: impl FnMut(Member)) -> Result<(), (JiterError, Option<Span>)> {
        // A key is a slice of the text (its escapes kept), so its offset is where it lies in the text.
        let base = self.base;
        let key_of = |k: &[u8]| Span::new(k.as_ptr() as usize - base, k.as_ptr() as usize - base + k.len());
        let mut key = self.jiter.next_object_bytes().map_err(|e| (e, None))?.map(key_of);
        while let Some(key_span) = key {
            let peek = self.jiter.peek().map_err(|e| (e, Some(key_span)))?;
            let start = self.index();
            self.jiter.known_skip(peek).map_err(|e| (e, Some(key_span)))?;
            each(Member { key: key_span, value: Span::new(start, self.index()) });
            key = self.jiter.next_key_bytes().map_err(|e| (e, None))?.map(key_of);
        }
        Ok(())
    }

    pub fn members_into(&mut self, out: &mut Vec<Member>) -> Result<(), (JiterError, Option<Span>)> {
        self.members(|m| out.push(m))
    }
}

/// Checks that `doc` is exactly one JSON value.
pub fn validate(doc: &str) -> Result<(), String> {
    let mut j = Jiter::new(doc.as_bytes());
    j.next_skip().and_then(|()| j.finish()).map_err(|e| describe(doc, &e))
}

/// Calls `f` with each member of the object `text`. False if `text` is not an object (or not JSON); `f` may
/// have seen some members by then.
pub fn each_member<'a>(text: &'a str, mut f: impl FnMut(Field<'a>)) -> bool {
    let mut r = Reader::new(text);
    matches!(r.jiter.peek(), Ok(Peek::Object))
        && r.members(|m| f(Field::new(text, m))).is_ok()
        && r.jiter.finish().is_ok()
}

/// Calls `f(element text)` for each element of the array `text`. False if `text` is not an array (or not
/// JSON); `f` may have seen some elements by then.
pub fn each_element<'a>(text: &'a str, mut f: impl FnMut(&'a str)) -> bool {
    let mut j = Jiter::new(text.as_bytes());
    let mut step = match j.next_array() {
        Ok(s) => s,
        Err(_) => return false,
    };
    while let Some(peek) = step {
        let start = j.current_index();
        if j.known_skip(peek).is_err() {
            return false;
        }
        f(&text[start..j.current_index()]);
        step = match j.array_step() {
            Ok(s) => s,
            Err(_) => return false,
        };
    }
    j.finish().is_ok()
}

/// The text of a JSON string literal, borrowed when it has no escapes. `None` if `literal` is not a string
/// or holds an escape Rust cannot represent (a lone surrogate).
pub fn string(literal: &str) -> Option<Cow<'_, str>> {
    let inner = literal.strip_prefix('"')?.strip_suffix('"')?;
    if !inner.as_bytes().contains(&b'\\') {
        return Some(Cow::Borrowed(inner));
    }
    serde_json::from_str::<String>(literal).ok().map(Cow::Owned)
}

/// JSON text known to be valid: a record kept verbatim for the `raw` column.
#[derive(Clone, PartialEq, Eq)]
pub struct Raw(Box<str>);

impl Raw {
    /// Checks `text` first.
    pub fn parse(text: impl Into<String>) -> Result<Raw, String> {
        let text = text.into();
        validate(&text)?;
        Ok(Raw(text.into_boxed_str()))
    }

    /// Text this crate has already checked (a record of a read page) or written itself; a `String` is moved in,
    /// not copied.
    pub(crate) fn checked(text: impl Into<Box<str>>) -> Raw {
        Raw(text.into())
    }

    pub fn get(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Raw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Embedded as JSON, not as a string (serde_json checks it once more on the way out).
impl serde::Serialize for Raw {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let raw: &serde_json::value::RawValue = serde_json::from_str(&self.0).map_err(serde::ser::Error::custom)?;
        raw.serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(text: &str) -> Option<Vec<(String, &str, Option<&str>)>> {
        let mut out = Vec::new();
        each_member(text, |f| out.push((f.name().into_owned(), f.value(), f.plain_string()))).then_some(out)
    }

    #[test]
    fn members_are_found_with_their_exact_text() {
        let m = members(r#" { "a" : "x" , "b\u0063":[1, {"c":2}], "d":"e\"f" ,"n":null} "#).unwrap();
        assert_eq!(
            m,
            vec![
                ("a".to_string(), "\"x\"", Some("x")),
                ("bc".to_string(), "[1, {\"c\":2}]", None),
                ("d".to_string(), "\"e\\\"f\"", None),
                ("n".to_string(), "null", None)
            ]
        );
        assert!(members("[1]").is_none());
        assert!(members("{\"a\":1,}").is_none());
        assert!(members("{\"a\":1} x").is_none());
    }

    #[test]
    fn elements_are_found_with_their_exact_text() {
        let mut seen = Vec::new();
        assert!(each_element(r#"[ 1 , "two", {"three":[3]} ]"#, |e| seen.push(e)));
        assert_eq!(seen, ["1", "\"two\"", "{\"three\":[3]}"]);
        assert!(!each_element("{}", |_| {}));
        assert!(!each_element("[1,]", |_| {}));
    }

    #[test]
    fn strings_are_borrowed_unless_they_have_escapes() {
        assert!(matches!(string("\"plain\""), Some(Cow::Borrowed("plain"))));
        assert_eq!(string(r#""tab\tbed \u00e9""#).as_deref(), Some("tab\tbed é"));
        assert_eq!(string("7"), None);
        assert_eq!(string(r#""\ud800""#), None, "a lone surrogate is not text");
    }

    #[test]
    fn validation_says_what_is_wrong_and_where() {
        assert!(validate(r#"{"a":[1,2,{"b":null}]}"#).is_ok());
        let e = validate("{\"a\":\n [1,]}").unwrap_err();
        assert!(e.contains("line 2 column"), "{e}");
        assert!(validate("{} {}").is_err());
        assert!(validate("").is_err());
    }
}
