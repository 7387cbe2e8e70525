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

/// One member of an object (or one element of an array, with an empty key): its key between the quotes, its
/// value's text, and where the value's own members or elements lie in the level below, when it was read that deep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Member {
    pub key: Span,
    pub value: Span,
    pub inner: Inner,
}

/// `count` entries from `first` in the level below.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Inner {
    first: u32,
    count: u32,
}

impl Inner {
    fn of(level: &[Member], first: usize) -> Inner {
        Inner { first: first as u32, count: (level.len() - first) as u32 }
    }

    fn range(&self) -> std::ops::Range<usize> {
        self.first as usize..(self.first + self.count) as usize
    }
}

/// One member of an object, read on demand: a record has about 60 fields and a sync types 18, so a field that
/// is only matched by its key costs no more than that match.
#[derive(Debug, Clone, Copy)]
pub struct Field<'a> {
    body: &'a str,
    member: Member,
    /// The levels below the one the member is in (see `Reader::members_into`).
    below: &'a [Vec<Member>],
}

impl<'a> Field<'a> {
    /// `member` of the document `body` it was found in; `below`, the levels under the member's.
    pub fn new(body: &'a str, member: Member, below: &'a [Vec<Member>]) -> Field<'a> {
        Field { body, member, below }
    }

    /// The members of the object this field holds, when it holds one and it was read that deep; an array's
    /// elements likewise (with empty keys). `None` for anything else.
    pub fn members(&self) -> Option<impl Iterator<Item = Field<'a>> + 'a> {
        self.inner(b'{')
    }

    pub fn elements(&self) -> Option<impl Iterator<Item = Field<'a>> + 'a> {
        self.inner(b'[')
    }

    fn inner(&self, open: u8) -> Option<impl Iterator<Item = Field<'a>> + 'a> {
        let (level, below) = self.below.split_first()?;
        (self.value().as_bytes().first() == Some(&open)).then(|| {
            let body = self.body;
            level[self.member.inner.range()].iter().map(move |&member| Field { body, member, below })
        })
    }

    /// The key between its quotes, when it has no escapes (then it is the field's name).
    #[inline]
    pub fn plain_key(&self) -> Option<&'a [u8]> {
        let key = self.member.key.of(self.body).as_bytes();
        (!has_escape(key)).then_some(key)
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
        (!has_escape(inner.as_bytes())).then_some(inner)
    }
}

/// The text (a string's or a key's, between the quotes) holds an escape. Most are short: the whole text is
/// looked at without a short cut, which the compiler turns into a few wide compares, instead of a call to `memchr`
/// per string.
#[inline]
pub fn has_escape(text: &[u8]) -> bool {
    text.iter().fold(false, |seen, &b| seen | (b == b'\\'))
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

    /// Reads the members of the object that starts here (the `{` was peeked) into `levels[0]`, and where a
    /// member holds an object or an array, its members or elements into `levels[1]`, and so on while there
    /// are levels (deeper values are passed whole). So a page is read once, lookups and tag lists included.
    /// On an error, the key of the member being read, if it got that far.
    pub fn members_into(&mut self, levels: &mut [Vec<Member>]) -> Result<(), (JiterError, Option<Span>)> {
        // A key is a slice of the text (its escapes kept), so its offset is where it lies in the text.
        let base = self.base;
        let key_of = |k: &[u8]| Span::new(k.as_ptr() as usize - base, k.as_ptr() as usize - base + k.len());
        let mut key = self.jiter.next_object_bytes().map_err(|e| (e, None))?.map(key_of);
        while let Some(key_span) = key {
            let peek = self.jiter.peek().map_err(|e| (e, Some(key_span)))?;
            let (value, inner) = self.value(peek, &mut levels[1..]).map_err(|(e, _)| (e, Some(key_span)))?;
            levels[0].push(Member { key: key_span, value, inner });
            key = self.jiter.next_key_bytes().map_err(|e| (e, None))?.map(key_of);
        }
        Ok(())
    }

    /// The elements of the array that starts here (the `[` was peeked), as `members_into` reads members.
    fn elements_into(&mut self, levels: &mut [Vec<Member>]) -> Result<(), (JiterError, Option<Span>)> {
        let mut step = self.jiter.known_array().map_err(|e| (e, None))?;
        while let Some(peek) = step {
            let (value, inner) = self.value(peek, &mut levels[1..])?;
            levels[0].push(Member { key: Span::new(value.start as usize, value.start as usize), value, inner });
            step = self.jiter.array_step().map_err(|e| (e, None))?;
        }
        Ok(())
    }

    /// Reads the value that starts here (`peek` is its kind), into `levels` if it has members or elements and
    /// there is a level for them. Inlined into the loops over members and elements: most values are strings,
    /// numbers and the like, which then cost no call returning this larger result.
    #[inline(always)]
    fn value(&mut self, peek: Peek, levels: &mut [Vec<Member>]) -> Result<(Span, Inner), (JiterError, Option<Span>)> {
        let start = self.index();
        let inner = match (peek, levels.first().map(Vec::len)) {
            (Peek::Object, Some(first)) => {
                self.members_into(levels)?;
                Inner::of(&levels[0], first)
            }
            (Peek::Array, Some(first)) => {
                self.elements_into(levels)?;
                Inner::of(&levels[0], first)
            }
            _ => {
                self.jiter.known_skip(peek).map_err(|e| (e, None))?;
                Inner::default()
            }
        };
        Ok((Span::new(start, self.index()), inner))
    }
}

/// Checks that `doc` is exactly one JSON value.
pub fn validate(doc: &str) -> Result<(), String> {
    let mut j = Jiter::new(doc.as_bytes());
    j.next_skip().and_then(|()| j.finish()).map_err(|e| describe(doc, &e))
}

/// Calls `f` with each member of the object `text` (not read deeper), once the whole text is read. False, and
/// `f` not called, if `text` is not an object (or not JSON).
pub fn each_member<'a>(text: &'a str, f: impl FnMut(Field<'a>)) -> bool {
    let mut r = Reader::new(text);
    let mut level = [Vec::new()];
    let read =
        matches!(r.jiter.peek(), Ok(Peek::Object)) && r.members_into(&mut level).is_ok() && r.jiter.finish().is_ok();
    let [members] = level;
    read && {
        members.into_iter().map(|m| Field::new(text, m, &[])).for_each(f);
        true
    }
}

/// The text of a JSON string literal, borrowed when it has no escapes. `None` if `literal` is not a string
/// or holds an escape Rust cannot represent (a lone surrogate).
pub fn string(literal: &str) -> Option<Cow<'_, str>> {
    let inner = literal.strip_prefix('"')?.strip_suffix('"')?;
    if !has_escape(inner.as_bytes()) {
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
    use proptest::prelude::*;
    use serde_json::Value;

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            ".{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(".{0,6}", inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// `field` holds `want`, and what lies below it was noted as deep as `levels` go, no deeper.
    fn check(field: Field<'_>, want: &Value, levels: usize) -> Result<(), TestCaseError> {
        prop_assert_eq!(&serde_json::from_str::<Value>(field.value()).unwrap(), want);
        let (members, elements) =
            (field.members().map(Iterator::collect::<Vec<_>>), field.elements().map(Iterator::collect::<Vec<_>>));
        match want {
            Value::Object(m) if levels > 0 => {
                let members = members.expect("an object's members are noted");
                prop_assert_eq!(members.len(), m.len());
                for (f, (k, v)) in members.into_iter().zip(m) {
                    prop_assert_eq!(&*f.name(), k.as_str());
                    check(f, v, levels - 1)?;
                }
            }
            Value::Array(a) if levels > 0 => {
                let elements = elements.expect("an array's elements are noted");
                prop_assert_eq!(elements.len(), a.len());
                for (f, v) in elements.into_iter().zip(a) {
                    check(f, v, levels - 1)?;
                }
            }
            _ => prop_assert!(members.is_none() && elements.is_none(), "nothing noted for {want}"),
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn what_a_reading_notes_below_each_member_is_what_serde_json_reads_there(
            m in prop::collection::btree_map(".{0,6}", arb_json(), 0..6),
            pretty: bool,
        ) {
            let want = Value::Object(m.into_iter().collect());
            let text = if pretty { serde_json::to_string_pretty(&want) } else { serde_json::to_string(&want) }.unwrap();
            let mut levels = [Vec::new(), Vec::new(), Vec::new()];
            Reader::new(&text).members_into(&mut levels).unwrap();
            let top: Vec<Field> = levels[0].iter().map(|&m| Field::new(&text, m, &levels[1..])).collect();
            let Value::Object(m) = &want else { unreachable!() };
            prop_assert_eq!(top.len(), m.len());
            for (f, (k, v)) in top.into_iter().zip(m) {
                prop_assert_eq!(&*f.name(), k.as_str());
                check(f, v, 2)?;
            }
        }
    }

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
    fn members_and_elements_below_are_read_in_the_same_pass_as_deep_as_there_are_levels() {
        let text = r#"{"a":{"id":"1","name":"x"},"t":[{"name":"p"} , "q",[1]],"d":{"e":{"f":1}},"n":2,"o":{}}"#;
        let mut levels = [Vec::new(), Vec::new(), Vec::new()];
        let mut r = Reader::new(text);
        r.members_into(&mut levels).unwrap();
        let top: Vec<Field> = levels[0].iter().map(|&m| Field::new(text, m, &levels[1..])).collect();
        let shown = |f: Option<Box<dyn Iterator<Item = Field> + '_>>| {
            f.map(|i| i.map(|f| format!("{}={}", f.name(), f.value())).collect::<Vec<_>>())
        };
        let members = |f: &Field<'_>| shown(f.members().map(|i| Box::new(i) as Box<dyn Iterator<Item = Field>>));
        let elements = |f: &Field<'_>| shown(f.elements().map(|i| Box::new(i) as Box<dyn Iterator<Item = Field>>));
        assert_eq!(members(&top[0]).unwrap(), ["id=\"1\"", "name=\"x\""]);
        assert_eq!(elements(&top[0]), None, "an object has no elements");
        assert_eq!(elements(&top[1]).unwrap(), ["={\"name\":\"p\"}", "=\"q\"", "=[1]"]);
        let tag = top[1].elements().unwrap().next().unwrap();
        assert_eq!(members(&tag).unwrap(), ["name=\"p\""], "an element's members are the third level");
        let e = top[2].members().unwrap().next().unwrap();
        assert_eq!(e.value(), "{\"f\":1}");
        assert_eq!(members(&e).unwrap(), ["f=1"]);
        let f = e.members().unwrap().next().unwrap();
        assert_eq!(members(&f), None, "below the last level nothing is read");
        assert_eq!((members(&top[3]), members(&top[4])), (None, Some(vec![])));
        // The whole text was still checked: an error deep down is an error of the top-level member it is in.
        let bad = r#"{"ok":1,"d":{"e":[{"f":[1,]}]}}"#;
        let mut levels = [Vec::new(), Vec::new()];
        let (_, key) = Reader::new(bad).members_into(&mut levels).unwrap_err();
        assert_eq!(key.map(|k| k.of(bad)), Some("d"));
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
