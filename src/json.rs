//! A validating JSON scanner that says where things are instead of building values.
//!
//! A search page is about 440 KB of JSON (200 deals of 60 fields); dealsync types 18 fields of each deal and
//! keeps the whole record verbatim in `raw`. serde_json can either check a record and hand back its text or
//! read fields out of it, so every record used to be scanned twice. This scanner checks a page once and notes
//! byte spans: each record's text and each record's top-level members. Mapping reads values from those spans;
//! a value inside a member (a lookup's `name`, a tag list) is read by walking the member's text again, which is
//! short. The grammar is the one serde_json accepts (RFC 8259, with `\u` escapes of lone surrogates allowed as
//! serde_json allows them in text it only checks); only nesting deeper than 1024 levels is refused.

use std::borrow::Cow;

/// Deeper documents are refused, where serde_json's checker has no limit (its `Value` reader stops at 128). The
/// scanner recurses, and this bounds its stack to a few hundred kilobytes.
pub const MAX_DEPTH: u32 = 1024;

/// Where a piece of text lies in the document it was scanned from (byte offsets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    fn new(start: usize, end: usize) -> Span {
        Span { start: start as u32, end: end as u32 }
    }

    /// The spanned text of `doc` (the document the span was found in).
    #[inline]
    pub fn of<'a>(&self, doc: &'a str) -> &'a str {
        &doc[self.start as usize..self.end as usize]
    }
}

/// An object's key as written (quotes included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    pub span: Span,
    /// The key contains a backslash escape, so its text is not its name.
    pub escaped: bool,
}

/// One member of an object, as kept for each top-level field of every record of a page (12 bytes: a page of
/// 200 deals holds 12,000 of them). The key's end is found again from the value's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    /// The key's start; the top bit says whether it has escapes.
    key_start: u32,
    pub value: Span,
}

const ESCAPED: u32 = 1 << 31;

impl Member {
    fn new(key: Key, value: Span) -> Member {
        Member { key_start: key.span.start | if key.escaped { ESCAPED } else { 0 }, value }
    }

    /// The key, in `doc` (the document the member was found in): between it and the value there is only
    /// whitespace and the colon.
    pub fn key(&self, doc: &str) -> Key {
        let b = doc.as_bytes();
        let mut end = self.value.start as usize;
        while end > 0 && b[end - 1] != b'"' {
            end -= 1;
        }
        Key { span: Span::new((self.key_start & !ESCAPED) as usize, end), escaped: self.key_start & ESCAPED != 0 }
    }
}

/// Why a text is not JSON, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub offset: usize,
    pub problem: &'static str,
}

impl Error {
    /// "`problem` at line L column C" of `doc`, as serde_json words its positions.
    pub fn describe(&self, doc: &str) -> String {
        let before = &doc.as_bytes()[..self.offset.min(doc.len())];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let column = before.len() - before.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1) + 1;
        format!("{} at line {line} column {column}", self.problem)
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The high bit of every byte of `v` that is a quote, a backslash or a control character. Only the lowest
/// flagged byte is certain (a borrow can flag bytes above a true hit), which is the only one used.
#[inline]
fn specials(v: u64) -> u64 {
    let quote = v ^ (ONES * u64::from(b'"'));
    let backslash = v ^ (ONES * u64::from(b'\\'));
    let zero = |x: u64| x.wrapping_sub(ONES) & !x;
    (zero(quote) | zero(backslash) | (v.wrapping_sub(ONES * 0x20) & !v)) & HIGHS
}

/// A cursor over a document that checks what it passes.
pub struct Scanner<'a> {
    b: &'a [u8],
    pub pos: usize,
    depth: u32,
}

impl<'a> Scanner<'a> {
    /// Spans are 31-bit: a document over 2 GiB is refused (a Zoho page is under a megabyte).
    pub fn new(doc: &'a str) -> Result<Scanner<'a>, Error> {
        if doc.len() >= ESCAPED as usize {
            return Err(Error { offset: 0, problem: "document larger than 2 GiB" });
        }
        Ok(Scanner { b: doc.as_bytes(), pos: 0, depth: 0 })
    }

    fn err<T>(&self, problem: &'static str) -> Result<T, Error> {
        Err(Error { offset: self.pos, problem })
    }

    /// The next byte after any whitespace, without taking it.
    #[inline]
    pub fn peek(&mut self) -> Option<u8> {
        while let Some(&c) = self.b.get(self.pos) {
            if !matches!(c, b' ' | b'\n' | b'\r' | b'\t') {
                return Some(c);
            }
            self.pos += 1;
        }
        None
    }

    /// Takes `c` (after whitespace) or fails with `problem`.
    #[inline]
    pub fn expect(&mut self, c: u8, problem: &'static str) -> Result<(), Error> {
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else {
            self.err(problem)
        }
    }

    /// Only whitespace is left.
    pub fn end(&mut self) -> Result<(), Error> {
        match self.peek() {
            None => Ok(()),
            Some(_) => self.err("trailing characters"),
        }
    }

    /// Passes a string starting at `pos` (its opening quote); says whether it holds escapes.
    #[inline]
    fn string(&mut self) -> Result<bool, Error> {
        let b = self.b;
        let mut i = self.pos + 1;
        let mut escaped = false;
        loop {
            while let Some(chunk) = b.get(i..i + 8) {
                let hits = specials(u64::from_le_bytes(chunk.try_into().expect("eight bytes")));
                if hits != 0 {
                    i += (hits.trailing_zeros() / 8) as usize;
                    break;
                }
                i += 8;
            }
            match b.get(i) {
                Some(b'"') => {
                    self.pos = i + 1;
                    return Ok(escaped);
                }
                Some(b'\\') => {
                    escaped = true;
                    match b.get(i + 1) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => i += 2,
                        Some(b'u') => match b.get(i + 2..i + 6) {
                            Some(hex) if hex.iter().all(u8::is_ascii_hexdigit) => i += 6,
                            _ => {
                                self.pos = i;
                                return self.err("invalid \\u escape");
                            }
                        },
                        _ => {
                            self.pos = i;
                            return self.err("invalid escape");
                        }
                    }
                }
                Some(&c) if c < 0x20 => {
                    self.pos = i;
                    return self.err("control character in a string");
                }
                Some(_) => i += 1,
                None => {
                    self.pos = b.len();
                    return self.err("unterminated string");
                }
            }
        }
    }

    fn digits(&mut self) -> usize {
        let from = self.pos;
        while self.b.get(self.pos).is_some_and(u8::is_ascii_digit) {
            self.pos += 1;
        }
        self.pos - from
    }

    fn number(&mut self) -> Result<(), Error> {
        if self.b[self.pos] == b'-' {
            self.pos += 1;
        }
        match self.b.get(self.pos) {
            Some(b'0') => {
                self.pos += 1;
                if self.b.get(self.pos).is_some_and(u8::is_ascii_digit) {
                    return self.err("invalid number (leading zero)");
                }
            }
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return self.err("invalid number"),
        }
        if self.b.get(self.pos) == Some(&b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return self.err("invalid number (no digit after the point)");
            }
        }
        if matches!(self.b.get(self.pos), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.b.get(self.pos), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return self.err("invalid number (no digit in the exponent)");
            }
        }
        Ok(())
    }

    fn literal(&mut self, word: &'static [u8]) -> Result<(), Error> {
        if self.b.get(self.pos..self.pos + word.len()) == Some(word) {
            self.pos += word.len();
            Ok(())
        } else {
            self.err("expected a value")
        }
    }

    /// Passes one value (after whitespace) and returns its span.
    pub fn value(&mut self) -> Result<Span, Error> {
        let Some(c) = self.peek() else { return self.err("expected a value, found the end") };
        let start = self.pos;
        match c {
            b'"' => {
                self.string()?;
            }
            b'{' => self.object(|s, _| s.value().map(drop))?,
            b'[' => self.array(|s| s.value().map(drop))?,
            b't' => self.literal(b"true")?,
            b'f' => self.literal(b"false")?,
            b'n' => self.literal(b"null")?,
            b'-' | b'0'..=b'9' => self.number()?,
            _ => return self.err("expected a value"),
        }
        Ok(Span::new(start, self.pos))
    }

    /// Passes `open`, items separated by commas, and `close` (after whitespace), calling `item` with the scanner
    /// at each item; `item` must pass it. `after_item` is the complaint when neither a comma nor `close` follows.
    fn delimited(
        &mut self,
        (open, close): (u8, u8),
        (expected, after_item): (&'static str, &'static str),
        mut item: impl FnMut(&mut Self) -> Result<(), Error>,
    ) -> Result<(), Error> {
        self.expect(open, expected)?;
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.err("nested too deeply");
        }
        if self.peek() != Some(close) {
            loop {
                item(self)?;
                match self.peek() {
                    Some(b',') => self.pos += 1,
                    Some(c) if c == close => break,
                    _ => return self.err(after_item),
                }
            }
        }
        self.pos += 1;
        self.depth -= 1;
        Ok(())
    }

    /// Passes an object (after whitespace), calling `member` with the scanner after each key and its colon;
    /// `member` must pass the value.
    pub fn object(&mut self, mut member: impl FnMut(&mut Self, Key) -> Result<(), Error>) -> Result<(), Error> {
        self.delimited((b'{', b'}'), ("expected an object", "expected `,` or `}`"), |s| {
            if s.peek() != Some(b'"') {
                return s.err("expected a key");
            }
            let start = s.pos;
            let escaped = s.string()?;
            let key = Key { span: Span::new(start, s.pos), escaped };
            s.expect(b':', "expected `:`")?;
            member(s, key)
        })
    }

    /// Passes an object and appends its members, values spanned, to `out`.
    pub fn members_into(&mut self, out: &mut Vec<Member>) -> Result<(), Error> {
        self.object(|s, key| {
            let value = s.value()?;
            out.push(Member::new(key, value));
            Ok(())
        })
    }

    /// Passes an array (after whitespace), calling `element` with the scanner at each element; `element` must
    /// pass it.
    pub fn array(&mut self, element: impl FnMut(&mut Self) -> Result<(), Error>) -> Result<(), Error> {
        self.delimited((b'[', b']'), ("expected an array", "expected `,` or `]`"), element)
    }
}

/// Checks that `doc` is exactly one JSON value.
pub fn validate(doc: &str) -> Result<(), Error> {
    let mut s = Scanner::new(doc)?;
    s.value()?;
    s.end()
}

/// Calls `f(key as written, whether the key has escapes, value text)` for each member of the object `text`.
/// False if `text` is not an object (or not JSON); `f` may have seen some members by then.
pub fn each_member<'a>(text: &'a str, mut f: impl FnMut(&'a str, bool, &'a str)) -> bool {
    let Ok(mut s) = Scanner::new(text) else { return false };
    s.object(|s, key| {
        let v = s.value()?;
        f(key.span.of(text), key.escaped, v.of(text));
        Ok(())
    })
    .and_then(|()| s.end())
    .is_ok()
}

/// Calls `f(element text)` for each element of the array `text`. False if `text` is not an array (or not
/// JSON); `f` may have seen some elements by then.
pub fn each_element<'a>(text: &'a str, mut f: impl FnMut(&'a str)) -> bool {
    let Ok(mut s) = Scanner::new(text) else { return false };
    s.array(|s| {
        f(s.value()?.of(text));
        Ok(())
    })
    .and_then(|()| s.end())
    .is_ok()
}

/// The text of a JSON string literal, borrowed when it has no escapes. `None` if `literal` is not a string
/// or holds an escape Rust cannot represent (a lone surrogate).
pub fn string(literal: &str) -> Option<Cow<'_, str>> {
    let inner = literal.strip_prefix('"')?.strip_suffix('"')?;
    if !inner.contains('\\') {
        return Some(Cow::Borrowed(inner));
    }
    serde_json::from_str::<String>(literal).ok().map(Cow::Owned)
}

/// The name a key stands for: its text between the quotes, unescaped if `escaped`.
pub fn key_name(key: &str, escaped: bool) -> Cow<'_, str> {
    if escaped {
        string(key).unwrap_or(Cow::Borrowed(key))
    } else {
        Cow::Borrowed(&key[1..key.len() - 1])
    }
}

/// JSON text known to be valid: a record kept verbatim for the `raw` column.
#[derive(Clone, PartialEq, Eq)]
pub struct Raw(Box<str>);

impl Raw {
    /// Checks `text` first.
    pub fn parse(text: impl Into<String>) -> Result<Raw, Error> {
        let text = text.into();
        validate(&text)?;
        Ok(Raw(text.into_boxed_str()))
    }

    /// Text this crate has already checked (a record of a scanned page) or written itself; a `String` is moved in,
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

    fn accepts(doc: &str) -> bool {
        validate(doc).is_ok()
    }

    fn members(text: &str) -> Option<Vec<(&str, &str)>> {
        let mut out = Vec::new();
        each_member(text, |k, _, v| out.push((k, v))).then_some(out)
    }

    fn elements(text: &str) -> Option<Vec<&str>> {
        let mut out = Vec::new();
        each_element(text, |v| out.push(v)).then_some(out)
    }

    #[test]
    fn the_grammar_is_serde_jsons() {
        for ok in [
            "0", "-0", "1.5e3", "-12.25E-2", "1E+2", "true", "false", "null", "\"\"", "\"a\\u00e9\\n\\\"\"",
            "\"\\ud800 lone surrogates pass, as serde_json lets them\"", " [ 1 , {\"a\" : [ ] } ] ", "{}", "[]",
            "\"caf\u{e9} \u{1f680} long enough to cross an eight-byte word\"",
        ] {
            assert!(accepts(ok), "{ok}");
            assert!(serde_json::from_str::<serde::de::IgnoredAny>(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "01", "1.", ".5", "-", "1e", "+1", "tru", "nul", "\"abc", "\"a\\x\"", "\"\\u12g4\"", "\"tab\there\"",
            "[1,]", "{\"a\":1,}", "{\"a\" 1}", "{1:2}", "[1 2]", "{} {}", "\"\u{1}\"", "[", "{\"a\":",
        ] {
            assert!(!accepts(bad), "{bad:?}");
            assert!(serde_json::from_str::<serde::de::IgnoredAny>(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn nesting_is_limited_far_beyond_any_record() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        for n in [1, 128, 129, MAX_DEPTH as usize] {
            assert!(accepts(&deep(n)), "{n} levels");
            assert!(serde_json::from_str::<serde::de::IgnoredAny>(&deep(n)).is_ok(), "{n} levels");
        }
        let e = validate(&deep(MAX_DEPTH as usize + 1)).unwrap_err();
        assert_eq!(e.problem, "nested too deeply");
    }

    #[test]
    fn errors_say_where() {
        let doc = "{\"a\": 1,\n \"b\": tru}";
        let e = validate(doc).unwrap_err();
        assert_eq!(e.describe(doc), "expected a value at line 2 column 7");
    }

    #[test]
    fn members_and_elements_keep_the_text_as_written() {
        let m = members(r#"{ "name" : "Zylker", "id":"12", "x\u0041" : [1, {"b":null}] }"#).unwrap();
        assert_eq!(m, vec![("\"name\"", "\"Zylker\""), ("\"id\"", "\"12\""), ("\"x\\u0041\"", "[1, {\"b\":null}]")]);
        assert_eq!(key_name(m[2].0, true), "xA");
        assert_eq!(key_name(m[0].0, false), "name");
        assert_eq!(elements("[ \"a\" ,{\"n\":1}]").unwrap(), vec!["\"a\"", "{\"n\":1}"]);
        assert_eq!(members("[1]"), None);
        assert_eq!(elements("{}"), None);
        assert_eq!(string("\"plain\"").unwrap(), Cow::Borrowed("plain"));
        assert_eq!(string("\"a\\tb\"").unwrap(), "a\tb");
        assert_eq!(string("12"), None);
    }

    /// JSON-ish text: mostly valid documents, with some bytes changed so that many are not.
    fn documents() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just("null".to_string()),
            any::<bool>().prop_map(|b| b.to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| f.to_string()),
            "[-+0-9.eE]{1,6}",
            any::<String>().prop_map(|s| serde_json::to_string(&s).unwrap()),
            "\"([a-z\\\\\"/]|\\\\u[0-9a-fA-F]{4}|\\\\[bfnrtux\"])*\"",
        ];
        let value = leaf.prop_recursive(5, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(|v| format!("[{}]", v.join(","))),
                prop::collection::vec(("[a-z_]{0,8}", inner), 0..6).prop_map(|m| {
                    let body: Vec<String> = m.into_iter().map(|(k, v)| format!("\"{k}\" : {v}")).collect();
                    format!("{{ {} }}", body.join(" ,"))
                }),
            ]
        });
        (value, prop::option::of((any::<prop::sample::Index>(), prop::sample::select(vec![
            "", " ", ",", "]", "}", "\"", "\\", "\u{7}", "{", ":", "1", "-", "\t", "é",
        ]))))
            .prop_map(|(doc, cut)| match cut {
                Some((at, with)) if !doc.is_empty() => {
                    let mut i = at.index(doc.len());
                    while !doc.is_char_boundary(i) {
                        i -= 1;
                    }
                    let end = (i + 1..=doc.len()).find(|&j| doc.is_char_boundary(j)).unwrap_or(doc.len());
                    format!("{}{with}{}", &doc[..i], &doc[end..])
                }
                _ => doc,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        #[test]
        fn accepts_exactly_what_serde_json_accepts(doc in documents()) {
            let serde = serde_json::from_str::<serde::de::IgnoredAny>(&doc).is_ok();
            prop_assert_eq!(accepts(&doc), serde, "{}", doc);
        }

        #[test]
        fn members_are_what_serde_json_reads(doc in documents()) {
            if let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(&doc) {
                let ours = members(&doc).expect("an object");
                // serde_json's map keeps the last of repeated keys; so does this fold.
                let mut folded = serde_json::Map::new();
                for (k, v) in ours {
                    let key = key_name(k, k.contains('\\')).into_owned();
                    folded.insert(key, serde_json::from_str(v).unwrap());
                }
                prop_assert_eq!(folded, map);
            }
        }
    }
}
