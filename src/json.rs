//! A validating JSON scanner that says where things are instead of building values.
//!
//! A search page is about 440 KB of JSON (200 deals of 60 fields); dealsync types 18 fields of each deal and
//! keeps the whole record verbatim in `raw`. serde_json can either check a record and hand back its text or
//! read fields out of it, so every record used to be scanned twice. This scanner checks a page once and notes
//! byte spans: each record's text and each record's top-level members. Mapping reads values from those spans;
//! a value inside a member (a lookup's `name`, a tag list) is read by walking the member's text again, which is
//! short. Passing a value is one loop over its bytes with the open containers kept as bits, strings are
//! searched sixteen bytes at a time, and a record's scalar members are passed without a call. The
//! grammar is the one serde_json accepts (RFC 8259, with `\u` escapes of lone surrogates allowed as serde_json
//! allows them in text it only checks); only nesting deeper than 1024 levels is refused.

use std::borrow::Cow;

/// Deeper documents are refused, where serde_json's checker has no limit (its `Value` reader stops at 128). A
/// value is passed in one loop (no recursion), but the limit keeps what is accepted the same everywhere, and
/// a page's own levels (`object`, `array`) do recurse.
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

/// One member of an object, as kept for each top-level field of every record of a page (16 bytes: a page of
/// 200 deals holds 12,000 of them). Two flags ride in the top bits of the key's offsets, which are 31-bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    /// The key's start; the top bit says whether it has escapes.
    key_start: u32,
    /// The key's end; the top bit says whether the value is a string without escapes.
    key_end: u32,
    pub value: Span,
}

const ESCAPED: u32 = 1 << 31;

impl Member {
    fn new(key: Key, value: Span, plain: bool) -> Member {
        Member {
            key_start: key.span.start | if key.escaped { ESCAPED } else { 0 },
            key_end: key.span.end | if plain { ESCAPED } else { 0 },
            value,
        }
    }

    /// The key as written, quotes included.
    #[inline]
    pub fn key(&self) -> Key {
        Key {
            span: Span { start: self.key_start & !ESCAPED, end: self.key_end & !ESCAPED },
            escaped: self.key_start & ESCAPED != 0,
        }
    }

    /// The value is a string without escapes: its text between the quotes is the string itself.
    #[inline]
    pub fn plain_string(&self) -> bool {
        self.key_end & ESCAPED != 0
    }
}

/// One member of an object, read on demand: a record has about 60 fields and a sync types 18, so a field that
/// is only matched by its key costs no more than that match, and a string found without escapes is not looked
/// at again.
#[derive(Debug, Clone, Copy)]
pub struct Field<'a> {
    body: &'a str,
    member: Member,
}

impl<'a> Field<'a> {
    /// `member` of the document `body` it was found in.
    pub(crate) fn new(body: &'a str, member: Member) -> Field<'a> {
        Field { body, member }
    }

    /// The key as written, quotes included.
    pub fn key(&self) -> &'a str {
        self.member.key().span.of(self.body)
    }

    /// The key between its quotes, when it has no escapes (then it is the field's name).
    #[inline]
    pub fn plain_key(&self) -> Option<&'a [u8]> {
        let key = self.member.key();
        (!key.escaped).then(|| &self.body.as_bytes()[key.span.start as usize + 1..key.span.end as usize - 1])
    }

    /// The field is called `name`.
    #[inline]
    pub fn is(&self, name: &str) -> bool {
        match self.plain_key() {
            Some(key) => key == name.as_bytes(),
            None => self.name() == name,
        }
    }

    /// The field's name (the key unescaped).
    pub fn name(&self) -> Cow<'a, str> {
        let key = self.member.key();
        key_name(key.span.of(self.body), key.escaped)
    }

    /// The value's JSON text.
    #[inline]
    pub fn value(&self) -> &'a str {
        self.member.value.of(self.body)
    }

    /// The value's string, when it is a string without escapes (nothing left to check or unescape).
    #[inline]
    pub fn plain_string(&self) -> Option<&'a str> {
        let v = self.member.value;
        self.member.plain_string().then(|| Span { start: v.start + 1, end: v.end - 1 }.of(self.body))
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

/// Where the first quote, backslash or control character at or after `i` is (`b.len()` if none), sixteen bytes
/// at a time; Zoho's strings are short, so most end within the first sixteen.
#[inline(always)]
fn find_special(b: &[u8], mut i: usize) -> usize {
    while let Some(chunk) = b.get(i..i + 16) {
        let hits = specials16(chunk.try_into().expect("sixteen bytes"));
        if hits != 0 {
            return i + hits.trailing_zeros() as usize;
        }
        i += 16;
    }
    while b.get(i).is_some_and(|&c| !is_special(c)) {
        i += 1;
    }
    i
}

#[inline(always)]
fn is_special(c: u8) -> bool {
    c == b'"' || c == b'\\' || c < 0x20
}

/// Bit k says whether byte k is special.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline(always)]
fn specials16(chunk: &[u8; 16]) -> u32 {
    use std::arch::x86_64::*;
    // SAFETY: the build targets SSE2 (the cfg says so; it is part of x86-64), and the unaligned load reads
    // exactly the sixteen bytes of `chunk`.
    unsafe {
        let v = _mm_loadu_si128(chunk.as_ptr().cast());
        let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
        let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
        // Unsigned c < 0x20 exactly when max(c, 0x1f) is 0x1f.
        let control = _mm_cmpeq_epi8(_mm_max_epu8(v, _mm_set1_epi8(0x1f)), _mm_set1_epi8(0x1f));
        _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, backslash), control)) as u32
    }
}

#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
#[inline(always)]
fn specials16(chunk: &[u8; 16]) -> u32 {
    chunk.iter().enumerate().fold(0, |hits, (k, &c)| hits | u32::from(is_special(c)) << k)
}

#[inline(always)]
fn ws(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\n' | b'\r' | b'\t') = b.get(i) {
        i += 1;
    }
    i
}

fn fail<T>(offset: usize, problem: &'static str) -> Result<T, Error> {
    Err(Error { offset, problem })
}

/// Passes the string whose opening quote is at `i`: where it ends, and whether it holds escapes.
#[inline(always)]
fn string_at(b: &[u8], i: usize) -> Result<(usize, bool), Error> {
    let mut i = i + 1;
    let mut escaped = false;
    loop {
        i = find_special(b, i);
        match b.get(i) {
            Some(b'"') => return Ok((i + 1, escaped)),
            Some(b'\\') => {
                escaped = true;
                i = match b.get(i + 1) {
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => i + 2,
                    Some(b'u') if b.get(i + 2..i + 6).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) => i + 6,
                    Some(b'u') => return fail(i, "invalid \\u escape"),
                    _ => return fail(i, "invalid escape"),
                };
            }
            Some(_) => return fail(i, "control character in a string"),
            None => return fail(b.len(), "unterminated string"),
        }
    }
}

/// Passes the number starting at `i` (a digit or a minus sign).
#[inline]
fn number_at(b: &[u8], mut i: usize) -> Result<usize, Error> {
    let digits = |i: &mut usize| {
        let from = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i - from
    };
    if b[i] == b'-' {
        i += 1;
    }
    match b.get(i) {
        Some(b'0') => {
            i += 1;
            if b.get(i).is_some_and(u8::is_ascii_digit) {
                return fail(i, "invalid number (leading zero)");
            }
        }
        Some(b'1'..=b'9') => {
            digits(&mut i);
        }
        _ => return fail(i, "invalid number"),
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        if digits(&mut i) == 0 {
            return fail(i, "invalid number (no digit after the point)");
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return fail(i, "invalid number (no digit in the exponent)");
        }
    }
    Ok(i)
}

#[inline]
fn literal_at(b: &[u8], i: usize, word: &'static [u8]) -> Result<usize, Error> {
    if b.get(i..i + word.len()) == Some(word) {
        Ok(i + word.len())
    } else {
        fail(i, "expected a value")
    }
}

/// Passes the scalar (string, number, `true`, `false`, `null`) at `i`: where it ends, and whether it is a string
/// without escapes. `None` if no scalar starts there.
#[inline(always)]
fn scalar_at(b: &[u8], i: usize) -> Option<Result<(usize, bool), Error>> {
    let end = |r: Result<usize, Error>| Some(r.map(|end| (end, false)));
    match b.get(i)? {
        b'"' => Some(string_at(b, i).map(|(end, escaped)| (end, !escaped))),
        b'-' | b'0'..=b'9' => end(number_at(b, i)),
        b't' => end(literal_at(b, i, b"true")),
        b'f' => end(literal_at(b, i, b"false")),
        b'n' => end(literal_at(b, i, b"null")),
        _ => None,
    }
}

/// Passes a key at `i`, its colon and the whitespace after it: the key, and where the member's value starts.
#[inline(always)]
fn key_at(b: &[u8], i: usize) -> Result<(Key, usize), Error> {
    if b.get(i) != Some(&b'"') {
        return fail(i, "expected a key");
    }
    let (end, escaped) = string_at(b, i)?;
    let colon = ws(b, end);
    if b.get(colon) != Some(&b':') {
        return fail(colon, "expected `:`");
    }
    Ok((Key { span: Span::new(i, end), escaped }, ws(b, colon + 1)))
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
        fail(self.pos, problem)
    }

    /// The next byte after any whitespace, without taking it.
    #[inline]
    pub fn peek(&mut self) -> Option<u8> {
        self.pos = ws(self.b, self.pos);
        self.b.get(self.pos).copied()
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

    /// Passes one value (after whitespace) and returns its span.
    ///
    /// One loop, no call per token: the containers open inside the value are a stack of bits (object or
    /// array), so a record's nested lookups and lists cost a few compares per token. Every error is the one,
    /// at the offset, that a recursive descent would report.
    pub fn value(&mut self) -> Result<Span, Error> {
        let b = self.b;
        let start = ws(b, self.pos);
        let mut i = start;
        // Containers open inside this value: bit k of `objects` says whether the k-th is an object; past 64
        // levels, `deep` holds the rest.
        let mut open = 0u32;
        let mut objects = 0u64;
        let mut deep: Vec<bool> = Vec::new();
        let room = MAX_DEPTH - self.depth;
        'value: loop {
            // A value starts at `i`, after whitespace.
            match b.get(i) {
                Some(&c @ (b'{' | b'[')) => {
                    i += 1;
                    if open == room {
                        return fail(i, "nested too deeply");
                    }
                    let object = c == b'{';
                    if open < 64 {
                        objects = (objects & !(1 << open)) | (u64::from(object) << open);
                    } else {
                        deep.truncate(open as usize - 64);
                        deep.push(object);
                    }
                    open += 1;
                    i = ws(b, i);
                    if b.get(i) != Some(if object { &b'}' } else { &b']' }) {
                        if object {
                            i = key_at(b, i)?.1;
                        }
                        continue 'value;
                    }
                }
                next => match scalar_at(b, i) {
                    Some(scalar) => i = scalar?.0,
                    None if next.is_some() => return fail(i, "expected a value"),
                    None => return fail(i, "expected a value, found the end"),
                },
            }
            // After a value (or an empty container's opening): a comma or the innermost container's close.
            loop {
                if open == 0 {
                    self.pos = i;
                    return Ok(Span::new(start, i));
                }
                let object = if open <= 64 { objects >> (open - 1) & 1 == 1 } else { deep[open as usize - 65] };
                i = ws(b, i);
                match b.get(i) {
                    Some(b',') => {
                        i = ws(b, i + 1);
                        if object {
                            i = key_at(b, i)?.1;
                        }
                        continue 'value;
                    }
                    Some(b'}') if object => open -= 1,
                    Some(b']') if !object => open -= 1,
                    _ if object => return fail(i, "expected `,` or `}`"),
                    _ => return fail(i, "expected `,` or `]`"),
                }
                i += 1;
            }
        }
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

    /// Passes an object (after whitespace), calling `member` with the scanner at each member's value (after its
    /// key, colon and whitespace); `member` must pass the value.
    pub fn object(&mut self, mut member: impl FnMut(&mut Self, Key) -> Result<(), Error>) -> Result<(), Error> {
        self.delimited((b'{', b'}'), ("expected an object", "expected `,` or `}`"), |s| {
            let (key, value_start) = key_at(s.b, ws(s.b, s.pos))?;
            s.pos = value_start;
            member(s, key)
        })
    }

    /// Passes an object and appends its members, values spanned, to `out`.
    pub fn members_into(&mut self, out: &mut Vec<Member>) -> Result<(), Error> {
        self.object(|s, key| {
            let (value, plain) = s.member_value()?;
            out.push(Member::new(key, value, plain));
            Ok(())
        })
    }

    /// `value`, with the scalars a record's members mostly hold (text, null, numbers, booleans) passed without
    /// a call; also whether it is a string without escapes.
    #[inline(always)]
    fn member_value(&mut self) -> Result<(Span, bool), Error> {
        let i = ws(self.b, self.pos);
        let Some(scalar) = scalar_at(self.b, i) else { return Ok((self.value()?, false)) };
        let (end, plain) = scalar?;
        self.pos = end;
        Ok((Span::new(i, end), plain))
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

/// Calls `f` with each member of the object `text`. False if `text` is not an object (or not JSON); `f` may
/// have seen some members by then.
pub fn each_member<'a>(text: &'a str, mut f: impl FnMut(Field<'a>)) -> bool {
    let Ok(mut s) = Scanner::new(text) else { return false };
    s.object(|s, key| {
        let (value, plain) = s.member_value()?;
        f(Field::new(text, Member::new(key, value, plain)));
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
    // A byte loop: these strings are short, and `contains` costs a call and its set-up.
    if !inner.bytes().any(|c| c == b'\\') {
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
        each_member(text, |f| out.push((f.key(), f.value()))).then_some(out)
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
            "\"caf\u{e9} \u{1f680} long enough to cross a sixteen-byte test\"",
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
    fn errors_inside_nested_values_name_the_container_they_are_in() {
        let problem = |doc: &str| validate(doc).map_err(|e| (e.offset, e.problem)).unwrap_err();
        assert_eq!(problem(r#"{"a":[1,2}"#), (9, "expected `,` or `]`"));
        assert_eq!(problem(r#"[{"a":1]"#), (7, "expected `,` or `}`"));
        assert_eq!(problem(r#"{"a":{"b" 1}}"#), (10, "expected `:`"));
        assert_eq!(problem(r#"[{"a":1,}]"#), (8, "expected a key"));
        assert_eq!(problem(r#"[[[]],[[0]],[[-]]]"#), (15, "invalid number"));
        assert_eq!(problem(r#"{"a":[{"b":"#), (11, "expected a value, found the end"));
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

    #[test]
    fn a_string_ends_at_its_first_special_byte_wherever_it_falls() {
        // Specials at every offset across two sixteen-byte tests and the bytewise tail.
        for len in 0..40 {
            for at in 0..=len {
                for (special, valid) in [("\"", true), ("\\n", true), ("\\q", false), ("\u{1}", false), ("\\u00e9", true)] {
                    let doc = format!("\"{}{special}{}\"", "a".repeat(at), "b".repeat(len - at));
                    if special == "\"" {
                        let mut s = Scanner::new(&doc).unwrap();
                        assert_eq!(s.value().unwrap().end as usize, at + 2, "{doc:?}");
                    } else {
                        assert_eq!(accepts(&doc), valid, "{doc:?}");
                        assert_eq!(serde_json::from_str::<serde::de::IgnoredAny>(&doc).is_ok(), valid, "{doc:?}");
                    }
                }
            }
        }
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
