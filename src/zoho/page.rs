//! One page of records (search, COQL, deleted records), checked once and kept as received.
//!
//! The answer's text is kept whole. Scanning it (`crate::json`) checks it is JSON and notes where each record
//! lies and where each record's top-level fields lie, so a record is copied into `raw` straight from the text
//! and its fields are read from their spans: nothing is parsed twice and no record is copied before mapping.

use serde::Deserialize;

use crate::json::{self, Field, Member, Scanner, Span};

/// A page of records as Zoho sent them.
#[derive(Debug)]
pub struct Page {
    body: String,
    records: Vec<Spans>,
    members: Vec<Member>,
    pub more_records: bool,
    /// The order the answer says it is in (`info.sort_by`, `info.sort_order`), when it says.
    pub sort_by: Option<Box<str>>,
    pub sort_order: Option<Box<str>>,
}

#[derive(Debug, Clone, Copy)]
struct Spans {
    text: Span,
    /// Its top-level members, `members[first..first + count]`; none unless it is an object.
    first: u32,
    count: u32,
    object: bool,
}

/// One record of a page: its exact text and its top-level fields.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    body: &'a str,
    spans: Spans,
    members: &'a [Member],
}

impl<'a> Record<'a> {
    /// The record exactly as received (checked JSON).
    pub fn text(&self) -> &'a str {
        self.spans.text.of(self.body)
    }

    pub fn is_object(&self) -> bool {
        self.spans.object
    }

    /// The record's top-level fields in the order received (repeated keys included).
    pub fn fields(&self) -> impl Iterator<Item = Field<'a>> + 'a {
        let body = self.body;
        self.members.iter().map(move |&member| Field::new(body, member))
    }

    /// The JSON text of the first field called `name`.
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.fields().find(|f| f.is(name)).map(|f| f.value())
    }

    /// The record as owned JSON text, for `raw`.
    pub fn to_raw(&self) -> json::Raw {
        json::Raw::checked(self.text())
    }
}

#[derive(Deserialize, Default)]
struct Info {
    #[serde(default)]
    more_records: bool,
    #[serde(default)]
    sort_by: Option<Box<str>>,
    #[serde(default)]
    sort_order: Option<Box<str>>,
}

impl Page {
    /// Checks and indexes an answer `{"data": [...], "info": {...}}`; the error says what is wrong and where.
    pub fn parse(mut body: String) -> Result<Page, String> {
        // Kept until the page is mapped: without the slack the answer was read into.
        body.shrink_to_fit();
        // Sized for Zoho's records (about 35 bytes a field, 2 KB a deal) so that neither grows while scanning.
        let mut records = Vec::with_capacity(body.len() / 1024 + 1);
        let mut members = Vec::with_capacity(body.len() / 32 + 1);
        let mut info = None;
        let mut data = false;
        let mut s = Scanner::new(&body).map_err(|e| e.describe(&body))?;
        let scanned = s.object(|s, m: json::Key| {
            match &*json::key_name(m.span.of(&body), m.escaped) {
                "data" if !data => {
                    data = true;
                    if s.peek() == Some(b'[') {
                        s.array(|s| {
                            let first = members.len() as u32;
                            let object = s.peek() == Some(b'{');
                            let start = s.pos;
                            if object {
                                s.members_into(&mut members)?;
                            } else {
                                s.value()?;
                            }
                            let text = Span { start: start as u32, end: s.pos as u32 };
                            records.push(Spans { text, first, count: members.len() as u32 - first, object });
                            Ok(())
                        })?;
                    } else {
                        // `null` reads as no data; anything else is refused below.
                        let v = s.value()?;
                        data = v.of(&body) != "null";
                        if data {
                            return Err(json::Error { offset: v.start as usize, problem: "`data` is not an array" });
                        }
                    }
                }
                "info" if info.is_none() => info = Some(s.value()?),
                "data" | "info" => return Err(json::Error { offset: m.span.start as usize, problem: "repeated key" }),
                _ => {
                    s.value()?;
                }
            }
            Ok(())
        });
        scanned.and_then(|()| s.end()).map_err(|e| format!("not valid JSON ({})", e.describe(&body)))?;
        if !data {
            return Err("the answer has no `data` array".into());
        }
        let info: Info = match info {
            Some(span) => serde_json::from_str(span.of(&body)).map_err(|e| format!("`info` is not readable ({e})"))?,
            None => Info::default(),
        };
        Ok(Page {
            body,
            records,
            members,
            more_records: info.more_records,
            sort_by: info.sort_by,
            sort_order: info.sort_order,
        })
    }

    /// A page holding these records (each must be JSON), as if Zoho had sent them; for tests and benchmarks.
    pub fn of_records<S: AsRef<str>>(records: impl IntoIterator<Item = S>, more_records: bool) -> Result<Page, String> {
        let mut body = String::from("{\"data\":[");
        for (i, r) in records.into_iter().enumerate() {
            if i > 0 {
                body.push(',');
            }
            body.push_str(r.as_ref());
        }
        body.push_str(&format!("],\"info\":{{\"more_records\":{more_records}}}}}"));
        Page::parse(body)
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn get(&self, i: usize) -> Option<Record<'_>> {
        let spans = *self.records.get(i)?;
        let members = &self.members[spans.first as usize..(spans.first + spans.count) as usize];
        Some(Record { body: &self.body, spans, members })
    }

    pub fn last(&self) -> Option<Record<'_>> {
        self.len().checked_sub(1).and_then(|i| self.get(i))
    }

    pub fn records(&self) -> impl ExactSizeIterator<Item = Record<'_>> {
        (0..self.len()).map(|i| self.get(i).expect("in range"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_kept_as_written_with_their_fields() {
        let body = r#" { "info" : {"more_records":true,"sort_by":"Modified_Time"}, "data" : [ {"id":"1", "Stage" : "Closed Won","x":{"y":[1]}} , 7, {"\u0069d":"2"} ] } "#;
        let page = Page::parse(body.to_string()).unwrap();
        assert_eq!(page.len(), 3);
        assert!(page.more_records);
        assert_eq!(page.sort_by.as_deref(), Some("Modified_Time"));
        let first = page.get(0).unwrap();
        assert_eq!(first.text(), r#"{"id":"1", "Stage" : "Closed Won","x":{"y":[1]}}"#);
        assert_eq!(first.get("Stage"), Some("\"Closed Won\""));
        assert_eq!(first.get("x"), Some("{\"y\":[1]}"));
        assert_eq!(first.fields().count(), 3);
        let second = page.get(1).unwrap();
        assert!(!second.is_object());
        assert_eq!((second.text(), second.fields().count()), ("7", 0));
        assert_eq!(page.last().unwrap().get("id"), Some("\"2\""), "escaped keys are found by name");
    }

    #[test]
    fn a_field_gives_its_string_directly_only_when_it_has_no_escapes() {
        let page = Page::of_records([r#"{"a":"plain","b":"tab\tbed","c":7,"d":null,"e":"","f\u0067":"x","h":["y"]}"#], false).unwrap();
        let rec = page.get(0).unwrap();
        let seen: Vec<_> = rec.fields().map(|f| (f.name().into_owned(), f.plain_key().is_some(), f.plain_string(), f.value())).collect();
        assert_eq!(
            seen,
            [
                ("a".to_string(), true, Some("plain"), "\"plain\""),
                ("b".to_string(), true, None, r#""tab\tbed""#),
                ("c".to_string(), true, None, "7"),
                ("d".to_string(), true, None, "null"),
                ("e".to_string(), true, Some(""), "\"\""),
                ("fg".to_string(), false, Some("x"), "\"x\""),
                ("h".to_string(), true, None, "[\"y\"]"),
            ]
        );
        assert_eq!(rec.fields().next().unwrap().plain_key(), Some(&b"a"[..]));
        let is = |i: usize, name: &str| rec.fields().nth(i).unwrap().is(name);
        assert!(is(0, "a") && !is(0, "b") && !is(0, "aa"));
        assert!(is(5, "fg") && !is(5, "f\\u0067"), "an escaped key is matched by its name");
    }

    #[test]
    fn bad_answers_are_refused_with_the_reason() {
        let refused = |b: &str| Page::parse(b.to_string()).unwrap_err();
        assert!(refused(r#"{"data":[{"id":1},]}"#).starts_with("not valid JSON (expected a value at line 1 column 19"), "{}", refused(r#"{"data":[{"id":1},]}"#));
        assert_eq!(refused(r#"{"info":{}}"#), "the answer has no `data` array");
        assert_eq!(refused(r#"{"data":null}"#), "the answer has no `data` array");
        assert!(refused(r#"{"data":{}}"#).contains("`data` is not an array"));
        assert!(refused(r#"{"data":[],"data":[]}"#).contains("repeated key"));
        assert!(refused(r#"{"data":[],"info":{"more_records":"yes"}}"#).starts_with("`info` is not readable"));
        assert!(refused("").starts_with("not valid JSON"));
        assert!(refused(r#"{"data":[]} x"#).contains("trailing characters"));
    }

    #[test]
    fn a_page_made_of_records_reads_them_back() {
        let page = Page::of_records(["{\"id\":\"1\"}", "{\"id\":\"2\"}"], true).unwrap();
        assert_eq!(page.records().map(|r| r.get("id").unwrap()).collect::<Vec<_>>(), ["\"1\"", "\"2\""]);
        assert!(page.more_records);
        assert!(Page::of_records(["{"], false).is_err());
    }
}
