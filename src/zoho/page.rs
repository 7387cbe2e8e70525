//! One page of records (search, COQL, deleted records, records by id), checked once and kept as received.
//!
//! The answer's text is kept whole. Reading it (jiter, through `crate::json`) checks it is JSON and notes
//! where each record lies, where each record's top-level fields lie, and two levels below them (a lookup's
//! members, a tag list's elements and their members), so a record is copied into `raw` straight from the text
//! and its fields are read from their spans: nothing is parsed twice and no record is copied before mapping.
//! A record nested deeper than the parser follows does not fail its page: the page is split by serde_json
//! (which passes any depth) and that record alone is marked unreadable, to be quarantined.

use jiter::{JiterError, JiterErrorType, JsonErrorType, Peek};
use serde::Deserialize;

use crate::json::{self, Field, Member, Reader, Span};

/// Levels of a record's members the page's one reading notes: its fields, what they hold (a lookup's members, a
/// tag list's elements), and what those hold (each tag's members).
const LEVELS: usize = 3;

/// Levels of nesting the parser follows (jiter's limit); a record nested deeper is quarantined.
pub const MAX_DEPTH: usize = 200;

/// A page of records as Zoho sent them.
#[derive(Debug)]
pub struct Page {
    body: String,
    records: Vec<Spans>,
    /// The records' members by level (`LEVELS`); `levels[0]` holds each record's fields.
    levels: [Vec<Member>; LEVELS],
    /// Records that could not be read, by index, with the reason.
    unreadable: Vec<(usize, String)>,
    pub more_records: bool,
    /// The order the answer says it is in (`info.sort_by`, `info.sort_order`), when it says.
    pub sort_by: Option<Box<str>>,
    pub sort_order: Option<Box<str>>,
}

#[derive(Debug, Clone, Copy)]
struct Spans {
    text: Span,
    /// Its top-level members, `levels[0][first..first + count]`; none unless it is an object.
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
    below: &'a [Vec<Member>],
    unreadable: Option<&'a str>,
}

impl<'a> Record<'a> {
    /// The record exactly as received (checked JSON).
    pub fn text(&self) -> &'a str {
        self.spans.text.of(self.body)
    }

    pub fn is_object(&self) -> bool {
        self.spans.object
    }

    /// Why the record's fields could not be read (it is nested deeper than `MAX_DEPTH`), if so.
    pub fn unreadable(&self) -> Option<&'a str> {
        self.unreadable
    }

    /// The record's top-level fields in the order received (repeated keys included).
    pub fn fields(&self) -> impl Iterator<Item = Field<'a>> + 'a {
        let (body, below) = (self.body, self.below);
        self.members.iter().map(move |&member| Field::new(body, member, below))
    }

    /// The JSON text of the first field called `name`.
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.fields().find(|f| f.is(name)).map(|f| f.value())
    }

    /// The JSON text of the first field called `name`, looked for first at position `*at`, where the record
    /// before had it (Zoho writes an answer's records with the same keys in the same order); `*at` is updated.
    pub fn get_at(&self, name: &str, at: &mut usize) -> Option<&'a str> {
        if let Some(m) = self.members.get(*at) {
            let f = Field::new(self.body, *m, self.below);
            // The first field of that name, unless an earlier one has it too (a repeated key). A key of that name
            // is as long as the name (or longer, with escapes) and starts as it does (or with an escape), so most
            // keys are passed on their first byte.
            let same = |m: &Member| {
                let key = Field::new(self.body, *m, self.below);
                let first = key.key_bytes().first().copied();
                (first == name.as_bytes().first().copied() || first == Some(b'\\')) && key.is(name)
            };
            if f.is(name) && !self.members[..*at].iter().any(same) {
                return Some(f.value());
            }
        }
        let i = self.fields().position(|f| f.is(name))?;
        *at = i;
        Some(Field::new(self.body, self.members[i], self.below).value())
    }

    /// The record's id, also when its fields could not be read (serde_json finds it at any depth).
    pub fn id(&self) -> Option<String> {
        let text = match self.unreadable {
            None => self.get("id")?,
            Some(_) => {
                #[derive(Deserialize)]
                struct IdOnly<'a> {
                    #[serde(borrow)]
                    id: Option<&'a serde_json::value::RawValue>,
                }
                serde_json::from_str::<IdOnly>(self.text()).ok()?.id?.get()
            }
        };
        let id = json::string(text).map(|s| s.into_owned()).unwrap_or_else(|| text.to_string());
        (!id.is_empty() && id != "null").then_some(id)
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

/// Why an answer could not be read.
enum Problem {
    Json(JiterError),
    Shape(&'static str, usize),
}

impl From<JiterError> for Problem {
    fn from(e: JiterError) -> Self {
        Problem::Json(e)
    }
}

impl Problem {
    fn describe(&self, body: &str) -> String {
        match self {
            Problem::Json(e) => format!("not valid JSON ({})", json::describe(body, e)),
            Problem::Shape(what, at) => format!("{what} at {}", jiter::LinePosition::find(body.as_bytes(), *at)),
        }
    }
}

impl Page {
    /// Checks and indexes an answer `{"data": [...], "info": {...}}`; the error says what is wrong and where.
    pub fn parse(mut body: String) -> Result<Page, String> {
        // Kept until the page is mapped: without the slack the answer was read into.
        body.shrink_to_fit();
        // Sized for Zoho's records so that none grows while reading: a deal is about 2 KB with 60 fields (35 bytes
        // a field), about 25 members and elements one level below (eight small objects and the tag list: 90 bytes
        // each) and a few tags' members two levels below.
        let mut page = Page {
            records: Vec::with_capacity(body.len() / 1024 + 1),
            levels: [
                Vec::with_capacity(body.len() / 32 + 1),
                Vec::with_capacity(body.len() / 64 + 1),
                Vec::with_capacity(body.len() / 256 + 1),
            ],
            unreadable: Vec::new(),
            more_records: false,
            sort_by: None,
            sort_order: None,
            body: String::new(),
        };
        let info = match page.index(&body) {
            Ok(info) => info,
            // jiter refuses what serde_json accepts in two ways: nesting deeper than it follows, and escapes of
            // lone UTF-16 surrogates (valid JSON, not text). Either way only that record is lost to mapping.
            Err(p @ Problem::Json(_)) => page.index_record_by_record(&body).map_err(|_| p.describe(&body))?,
            Err(p) => return Err(p.describe(&body)),
        };
        let Some(info) = info else { return Err("the answer has no `data` array".into()) };
        let info: Info = match info {
            Some(span) => serde_json::from_str(span.of(&body)).map_err(|e| format!("`info` is not readable ({e})"))?,
            None => Info::default(),
        };
        (page.more_records, page.sort_by, page.sort_order) = (info.more_records, info.sort_by, info.sort_order);
        page.body = body;
        Ok(page)
    }

    /// Reads the answer in one pass. `Ok(None)`: no `data` array; otherwise where `info` lies, if anywhere.
    fn index(&mut self, body: &str) -> Result<Option<Option<Span>>, Problem> {
        let mut r = Reader::new(body);
        if r.jiter.peek()? != Peek::Object {
            return Err(Problem::Shape("the answer is not a JSON object", r.index()));
        }
        let (mut data, mut info) = (false, None);
        let mut key = r.jiter.next_object_bytes()?.map(key_name);
        while let Some(name) = key {
            let at = r.index();
            match &*name {
                "data" | "info" if (name == "data" && data) || (name == "info" && info.is_some()) => {
                    return Err(Problem::Shape("repeated key", at))
                }
                "data" => match r.jiter.peek()? {
                    Peek::Array => {
                        data = true;
                        let mut step = r.jiter.known_array()?;
                        while let Some(peek) = step {
                            let start = r.index();
                            let first = self.levels[0].len();
                            let object = peek == Peek::Object;
                            if object {
                                r.members_into(&mut self.levels).map_err(|(e, _)| e)?;
                            } else {
                                r.jiter.known_skip(peek)?;
                            }
                            let count = (self.levels[0].len() - first) as u32;
                            self.records.push(Spans {
                                text: Span::new(start, r.index()),
                                first: first as u32,
                                count,
                                object,
                            });
                            step = r.jiter.array_step()?;
                        }
                    }
                    // `null` reads as no data; anything else is refused.
                    Peek::Null => r.jiter.known_null()?,
                    _ => return Err(Problem::Shape("`data` is not an array", r.index())),
                },
                "info" => {
                    let peek = r.jiter.peek()?;
                    let start = r.index();
                    r.jiter.known_skip(peek)?;
                    info = Some(Span::new(start, r.index()));
                }
                _ => r.jiter.next_skip()?,
            }
            key = r.jiter.next_key_bytes()?.map(key_name);
        }
        r.jiter.finish()?;
        Ok(data.then_some(info))
    }

    /// The slow path for an answer holding a record nested deeper than `MAX_DEPTH`: serde_json splits it into
    /// records (it passes any depth), each is read alone, and the ones too deep are marked unreadable.
    fn index_record_by_record(&mut self, body: &str) -> Result<Option<Option<Span>>, String> {
        use serde_json::value::RawValue;
        #[derive(Deserialize)]
        struct Split<'a> {
            #[serde(borrow)]
            data: Option<Vec<&'a RawValue>>,
            #[serde(borrow)]
            info: Option<&'a RawValue>,
        }
        self.records.clear();
        self.levels.iter_mut().for_each(Vec::clear);
        let split: Split = serde_json::from_str(body).map_err(|e| format!("not valid JSON ({e})"))?;
        let offset = |text: &str| text.as_ptr() as usize - body.as_ptr() as usize;
        let Some(data) = split.data else { return Ok(None) };
        for (i, raw) in data.into_iter().enumerate() {
            let text = raw.get();
            let start = offset(text);
            let lens = self.levels.each_ref().map(Vec::len);
            let first = lens[0];
            let mut r = Reader::new(text);
            let object = text.starts_with('{');
            if object {
                if let Err((e, key)) = r.members_into(&mut self.levels) {
                    self.levels.iter_mut().zip(lens).for_each(|(l, len)| l.truncate(len));
                    let at = jiter::LinePosition::find(text.as_bytes(), e.index);
                    let field = key.map(|k| format!("`{}`: ", k.of(text))).unwrap_or_default();
                    let why = if e.error_type == JiterErrorType::JsonError(JsonErrorType::RecursionLimitExceeded) {
                        format!("{field}nested more than {MAX_DEPTH} levels deep, more than dealsync reads (at {at} of the record)")
                    } else {
                        format!("{field}{} at {at} of the record", e.error_type)
                    };
                    self.unreadable.push((i, why));
                }
                // Positions in the record's text, made positions in the page's.
                for (level, len) in self.levels.iter_mut().zip(lens) {
                    for m in &mut level[len..] {
                        m.key = Span::new(m.key.start as usize + start, m.key.end as usize + start);
                        m.value = Span::new(m.value.start as usize + start, m.value.end as usize + start);
                    }
                }
            }
            let count = (self.levels[0].len() - first) as u32;
            self.records.push(Spans { text: Span::new(start, start + text.len()), first: first as u32, count, object });
        }
        Ok(Some(split.info.map(|i| Span::new(offset(i.get()), offset(i.get()) + i.get().len()))))
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
        let members = &self.levels[0][spans.first as usize..(spans.first + spans.count) as usize];
        let unreadable = self.unreadable.iter().find(|(k, _)| *k == i).map(|(_, why)| why.as_str());
        Some(Record { body: &self.body, spans, members, below: &self.levels[1..], unreadable })
    }

    pub fn last(&self) -> Option<Record<'_>> {
        self.len().checked_sub(1).and_then(|i| self.get(i))
    }

    pub fn records(&self) -> impl ExactSizeIterator<Item = Record<'_>> {
        (0..self.len()).map(|i| self.get(i).expect("in range"))
    }
}

/// A top-level key's name: its bytes, unescaped when it has escapes.
fn key_name(key: &[u8]) -> std::borrow::Cow<'static, str> {
    let text = String::from_utf8_lossy(key);
    if !key.contains(&b'\\') {
        return std::borrow::Cow::Owned(text.into_owned());
    }
    std::borrow::Cow::Owned(
        json::string(&format!("\"{text}\"")).map(|s| s.into_owned()).unwrap_or_else(|| text.into_owned()),
    )
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
        let page =
            Page::of_records([r#"{"a":"plain","b":"tab\tbed","c":7,"d":null,"e":"","f\u0067":"x","h":["y"]}"#], false)
                .unwrap();
        let rec = page.get(0).unwrap();
        let seen: Vec<_> = rec
            .fields()
            .map(|f| (f.name().into_owned(), f.plain_key().is_some(), f.plain_string(), f.value()))
            .collect();
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
        assert_eq!(refused(r#"{"data":[{"id":1},]}"#), "not valid JSON (trailing comma at line 1 column 19)");
        assert_eq!(refused(r#"{"info":{}}"#), "the answer has no `data` array");
        assert_eq!(refused(r#"{"data":null}"#), "the answer has no `data` array");
        assert!(refused(r#"{"data":{}}"#).contains("`data` is not an array"));
        assert!(refused(r#"{"data":[],"data":[]}"#).contains("repeated key"));
        assert!(refused(r#"{"data":[],"info":{"more_records":"yes"}}"#).starts_with("`info` is not readable"));
        assert!(refused("").starts_with("not valid JSON"));
        assert!(refused(r#"{"data":[]} x"#).contains("trailing characters"), "{}", refused(r#"{"data":[]} x"#));
        assert!(
            refused(r#"{"data":[{"id":"1","Deal_Name":"cut sh"#).starts_with("not valid JSON (EOF while parsing"),
            "a page cut short fails whole"
        );
    }

    #[test]
    fn a_field_looked_for_where_the_last_record_had_it_is_still_the_first_of_its_name() {
        let page = Page::of_records(
            [
                r#"{"id":"1","T":"a"}"#,
                r#"{"id":"2","T":"b"}"#,
                r#"{"T":"c","id":"3"}"#,
                r#"{"id":"4","T":"d","T":"e"}"#,
                r#"{"id":"5","\u0054":"f","T":"g"}"#,
                r#"{"id":"6","TT":"h","T":"i"}"#,
                r#"{"id":"7"}"#,
            ],
            false,
        )
        .unwrap();
        let mut at = 0;
        let seen: Vec<_> = page.records().map(|r| r.get_at("T", &mut at)).collect();
        assert_eq!(
            seen,
            [Some("\"a\""), Some("\"b\""), Some("\"c\""), Some("\"d\""), Some("\"f\""), Some("\"i\""), None]
        );
        for r in page.records() {
            for start in 0..4 {
                let mut at = start;
                assert_eq!(r.get_at("T", &mut at), r.get("T"), "{}", r.text());
            }
        }
    }

    #[test]
    fn a_page_made_of_records_reads_them_back() {
        let page = Page::of_records(["{\"id\":\"1\"}", "{\"id\":\"2\"}"], true).unwrap();
        assert_eq!(page.records().map(|r| r.get("id").unwrap()).collect::<Vec<_>>(), ["\"1\"", "\"2\""]);
        assert!(page.more_records);
        assert!(Page::of_records(["{"], false).is_err());
    }
}
