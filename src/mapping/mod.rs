//! Turns one Deal record, as Zoho sent it, into a typed warehouse row, or says exactly why it cannot. Each value
//! is read from its field's JSON text as its column (`schema`) says, so money is an exact decimal straight from
//! the digits Zoho sent (never through a float); a record with a bad field is quarantined with the field named
//! and the problem, instead of failing the run or being dropped. `raw` keeps the record verbatim.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use crate::schema::{
    self, col, Column, DealRow, FieldType, Kept, Promoted, Quarantined, Source, Value, CLOSED_WON, MAX_SCALE,
};
use crate::zoho::{read_id, Record};

/// Levels of arrays and objects a field's value may nest: serde_json reads no deeper (its recursion limit), and
/// a record nested deeper is quarantined.
pub const MAX_DEPTH: usize = 128;

/// A row; or not ours (Zoho's `equals` matched a stage that merely contains "Closed Won"); or quarantined.
#[derive(Debug)]
pub enum Mapped {
    Row(Box<DealRow>),
    NotClosedWon { deal_id: Option<String>, stage: Option<String> },
    Quarantined(Box<Quarantined>),
}

/// How a run reads records: its columns, and for each the slot of the Zoho field it reads. Built once.
#[derive(Debug)]
pub struct Columns {
    columns: Vec<Column>,
    /// The slot of each column's Zoho field, or `None` for values the run sets.
    slots: Vec<Option<usize>>,
    /// Zoho field name → slot, one slot per distinct field.
    lookup: HashMap<String, usize>,
    id: usize,
    stage: usize,
    modified: usize,
}

impl Columns {
    pub fn new(promoted: &[Promoted]) -> Columns {
        let columns = schema::columns(promoted);
        let mut lookup = HashMap::new();
        let slot_of = |c: &Column| {
            let Source::Zoho(field) = &c.source else { return None };
            let n = lookup.len();
            Some(*lookup.entry(field.to_string()).or_insert(n))
        };
        let slots: Vec<_> = columns.iter().map(slot_of).collect();
        let slot = |i: usize| slots[i].expect("a standard column read from Zoho");
        let (id, stage, modified) = (slot(col::DEAL_ID), slot(col::STAGE), slot(col::MODIFIED_TIME));
        Columns { columns, slots, lookup, id, stage, modified }
    }

    /// Every Zoho field the columns read, once each, in column order.
    pub fn zoho_fields(&self) -> Vec<String> {
        let mut fields: Vec<(&String, &usize)> = self.lookup.iter().collect();
        fields.sort_by_key(|(_, slot)| **slot);
        fields.into_iter().map(|(field, _)| field.clone()).collect()
    }
}

/// Run-wide values stamped on every row, and the columns they are written in.
#[derive(Debug, Clone)]
pub struct RunStamp {
    /// Shared by every row of the run (each row holds it without a copy).
    pub run_id: Arc<str>,
    pub synced_at: DateTime<Utc>,
    pub columns: Arc<Columns>,
}

/// Maps the records of one page, one after the other, in lists reused from record to record.
pub struct Mapper<'s, 'p> {
    stamp: &'s RunStamp,
    /// The fields of the record being mapped, by slot.
    wire: Vec<Option<&'p RawValue>>,
    /// Its lookups read so far, by slot: a lookup is read once however many columns it fills.
    lookups: Vec<(usize, Lookup<'p>)>,
}

impl<'s, 'p> Mapper<'s, 'p> {
    pub fn new(stamp: &'s RunStamp) -> Self {
        Mapper { stamp, wire: Vec::new(), lookups: Vec::new() }
    }

    /// Maps one record of a page. Never panics, whatever the input.
    pub fn map(&mut self, rec: &Record<'p>) -> Mapped {
        let (rec, stamp) = (*rec, self.stamp);
        let quarantine = |deal_id: Option<String>, reason: String| {
            let (raw, sync_run_id, quarantined_at) = (rec.to_owned(), stamp.run_id.to_string(), stamp.synced_at);
            Mapped::Quarantined(Box::new(Quarantined { deal_id, reason, raw, sync_run_id, quarantined_at }))
        };
        let cols = &stamp.columns;
        self.wire.clear();
        self.wire.resize(cols.lookup.len(), None);
        let slots = Slots { lookup: &cols.lookup, wire: &mut self.wire };
        let too_deep = match serde_json::Deserializer::from_str(rec.get()).deserialize_map(slots) {
            Ok((Some(repeated), _)) => return quarantine(None, repeated),
            Ok((None, too_deep)) => too_deep,
            Err(_) if !rec.get().starts_with('{') => return quarantine(None, "record: not a JSON object".into()),
            Err(e) => return quarantine(None, format!("record: {e}")),
        };
        let id = present(self.wire[cols.id]).map(id_of).transpose().map_err(|e| format!("id: {e}"));
        if let Some(why) = too_deep {
            return quarantine(id.ok().flatten(), why);
        }
        let stage = match present(self.wire[cols.stage]).map(text_of).transpose() {
            Ok(s) => s,
            Err(e) => return quarantine(id.ok().flatten(), format!("Stage: {e}")),
        };
        if stage.as_deref() != Some(CLOSED_WON) {
            return Mapped::NotClosedWon { deal_id: id.ok().flatten(), stage };
        }
        let deal_id = match id {
            Ok(Some(id)) => id,
            Ok(None) => return quarantine(None, "id: missing".into()),
            Err(e) => return quarantine(None, e),
        };
        if present(self.wire[cols.modified]).is_none() {
            return quarantine(Some(deal_id), "Modified_Time: missing; it decides which copy is newer".into());
        }
        self.lookups.clear();
        let mut values = Vec::with_capacity(cols.columns.len());
        for (c, slot) in cols.columns.iter().zip(&cols.slots) {
            let value = match (&c.source, slot) {
                (Source::Zoho(field), Some(slot)) => match self.read(c.ty, *slot) {
                    Ok(v) => v,
                    Err(e) => return quarantine(Some(deal_id), format!("{field}: {e}")),
                },
                (Source::Raw, _) => Value::Json(rec.to_owned()),
                (Source::RunId, _) => Value::Shared(stamp.run_id.clone()),
                (Source::SyncedAt, _) => Value::Timestamp(stamp.synced_at),
                (Source::Flag(b), _) => Value::Boolean(*b),
                (Source::Unset, _) | (Source::Zoho(_), None) => Value::Null,
            };
            if c.kept == Kept::Required && matches!(value, Value::Null) {
                return quarantine(Some(deal_id), format!("{}: missing", c.name));
            }
            values.push(value);
        }
        Mapped::Row(Box::new(DealRow { values }))
    }

    /// One value of a record's field, read as its column says. An error is the problem; the caller names the field.
    fn read(&mut self, read: FieldType, slot: usize) -> Result<Value, String> {
        let Some(w) = present(self.wire[slot]) else {
            return Ok(if read == FieldType::TextList { Value::TextList(Vec::new()) } else { Value::Null });
        };
        Ok(match read {
            FieldType::Text => match w.get().as_bytes().first() {
                Some(b'"') => Value::Text(text_of(w)?),
                Some(b'{' | b'[') => return Err(format!("expected text, got {}", shown(w))),
                // A number or boolean where text is expected: kept as its text.
                _ => Value::Text(w.get().to_string()),
            },
            FieldType::Id => Value::Text(id_of(w)?),
            FieldType::Integer => match decimal(w)? {
                None => Value::Null,
                Some(d) if !d.fract().is_zero() => return Err(format!("{d} is not a whole number")),
                Some(d) => Value::Integer(i64::try_from(d).map_err(|_| format!("{d} is out of range"))?),
            },
            FieldType::Decimal => decimal(w)?.map_or(Value::Null, Value::Decimal),
            FieldType::Boolean => match w.get() {
                "\"\"" => Value::Null,
                "true" | "\"true\"" => Value::Boolean(true),
                "false" | "\"false\"" => Value::Boolean(false),
                _ => return Err(format!("expected true or false, got {}", shown(w))),
            },
            FieldType::Date | FieldType::Timestamp => date_or_instant(read, w)?,
            // A lone string counts as a one-item list.
            FieldType::TextList if w.get().starts_with('"') => {
                Value::TextList(Some(text_of(w)?).filter(|s| !s.is_empty()).into_iter().collect())
            }
            FieldType::TextList => Value::TextList(names(w)?),
            FieldType::LookupId | FieldType::LookupName | FieldType::LookupEmail => {
                let l = match self.lookups.iter().find(|(s, _)| *s == slot) {
                    Some((_, l)) => *l,
                    None => {
                        // An object, each member once (serde reads a list into a struct too).
                        let l = w.get().starts_with('{').then(|| serde_json::from_str(w.get()).ok()).flatten();
                        let l = l.ok_or_else(|| format!("expected an object with id and name, got {}", shown(w)))?;
                        self.lookups.push((slot, l));
                        l
                    }
                };
                let member = match read {
                    FieldType::LookupId => present(l.id).map(|id| id_of(id).map_err(|e| format!("id {e}"))),
                    FieldType::LookupName => present(l.name).map(text_of),
                    _ => present(l.email).map(text_of),
                };
                member.transpose()?.map_or(Value::Null, Value::Text)
            }
            FieldType::Json => Value::Json(w.to_owned()),
        })
    }
}

/// Reads a record's members straight into their slots. Yields, as quarantine reasons, the first field the run
/// reads that is repeated (which copy would be right?) and the first member nested deeper than `MAX_DEPTH`.
struct Slots<'m, 'p> {
    lookup: &'m HashMap<String, usize>,
    wire: &'m mut [Option<&'p RawValue>],
}

impl<'de> Visitor<'de> for Slots<'_, 'de> {
    type Value = (Option<String>, Option<String>);

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        /// A member's name, borrowed unless it had escapes.
        #[derive(Deserialize)]
        struct Name<'a>(#[serde(borrow)] Cow<'a, str>);
        let (mut repeated, mut too_deep) = (None, None);
        while let Some((Name(name), value)) = map.next_entry::<Name, &RawValue>()? {
            let slot = self.lookup.get(name.as_ref());
            if slot.is_some_and(|&s| self.wire[s].replace(value).is_some()) && repeated.is_none() {
                repeated = Some(format!("record: duplicate field `{name}`"));
            }
            if too_deep.is_none() {
                too_deep = nested_too_deep(value)
                    .map(|e| format!("record: `{name}`: nested deeper than serde_json reads ({e})"));
            }
        }
        Ok((repeated, too_deep))
    }
}

/// serde_json's error, when `value` nests arrays and objects deeper than `MAX_DEPTH`.
fn nested_too_deep(value: &RawValue) -> Option<serde_json::Error> {
    // It cannot unless it is an array or object with that many brackets, which most values are far from; the
    // rest are read as far as serde_json goes.
    let json = value.get();
    if !json.starts_with(['[', '{']) || json.bytes().filter(|b| matches!(b, b'[' | b'{')).count() < MAX_DEPTH {
        return None;
    }
    let error = serde_json::from_str::<serde_json::Value>(json).err();
    error.filter(|e| e.to_string().starts_with("recursion limit exceeded"))
}

/// A short, safe excerpt of a value's JSON text for an error message.
fn shown(value: &RawValue) -> String {
    let raw = value.get();
    raw.char_indices().nth(60).map_or_else(|| raw.to_string(), |(end, _)| format!("{}…", &raw[..end]))
}

/// The value, unless it is missing or `null`.
fn present(value: Option<&RawValue>) -> Option<&RawValue> {
    value.filter(|v| v.get() != "null")
}

fn text_of(value: &RawValue) -> Result<String, String> {
    if !value.get().starts_with('"') {
        return Err(format!("expected text, got {}", shown(value)));
    }
    // A string serde_json cannot read is one Rust cannot hold (an escaped lone UTF-16 surrogate).
    serde_json::from_str(value.get()).map_err(|e| e.to_string())
}

fn id_of(value: &RawValue) -> Result<String, String> {
    read_id(value).ok_or_else(|| format!("expected a numeric id, got {}", shown(value)))
}

/// An exact decimal from a JSON number or a numeric string. `""` counts as empty.
fn decimal(value: &RawValue) -> Result<Option<Decimal>, String> {
    let digits: Cow<str> = match value.get() {
        raw if raw.starts_with('"') => text_of(value).map_err(|_| format!("unreadable {}", shown(value)))?.into(),
        raw if raw.starts_with(|c: char| c == '-' || c.is_ascii_digit()) => raw.into(),
        _ => return Err(format!("expected a number, got {}", shown(value))),
    };
    let digits = digits.trim();
    if digits.is_empty() {
        return Ok(None);
    }
    let parse = if digits.contains(['e', 'E']) { Decimal::from_scientific } else { Decimal::from_str_exact };
    let d = parse(digits)
        .map_err(|_| format!("{} is not a decimal number that fits 28 significant digits exactly", shown(value)))?
        .normalize();
    if d.scale() > MAX_SCALE {
        return Err(format!("{} has more than {MAX_SCALE} digits after the point", shown(value)));
    }
    Ok(Some(d))
}

/// A `YYYY-MM-DD` date, or an instant with an offset as Zoho writes them (`2026-11-27T10:00:00+05:30`) converted
/// to UTC. `""` counts as empty.
fn date_or_instant(read: FieldType, value: &RawValue) -> Result<Value, String> {
    let s = text_of(value)?;
    let parsed = match read {
        _ if s.is_empty() => return Ok(Value::Null),
        FieldType::Date => match NaiveDate::parse_from_str(&s, "%Y-%m-%d") {
            Ok(d) if s.len() == 10 => Ok(Value::Date(d)),
            _ => Err("is not a YYYY-MM-DD date"),
        },
        _ => DateTime::parse_from_rfc3339(&s)
            .map(|t| Value::Timestamp(t.with_timezone(&Utc)))
            .map_err(|_| "is not an ISO-8601 date-time with an offset"),
    };
    parsed.map_err(|problem| format!("\"{s}\" {problem}"))
}

/// A lookup (`{"name", "id"}`, a user also with `email`), as those members.
#[derive(Deserialize, Clone, Copy)]
#[serde(bound(deserialize = "'de: 'a"))]
struct Lookup<'a> {
    id: Option<&'a RawValue>,
    name: Option<&'a RawValue>,
    email: Option<&'a RawValue>,
}

/// A JSON list of strings or of objects with a `name` (tags, multi-select lookups), as the names; objects
/// whose name is missing or null are left out.
fn names(value: &RawValue) -> Result<Vec<String>, String> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Item {
        Name(String),
        Named { name: Option<String> },
    }
    let items: Vec<Item> = serde_json::from_str(value.get())
        .map_err(|_| format!("expected a list of strings or named objects, got {}", shown(value)))?;
    let names = items.into_iter().filter_map(|item| match item {
        Item::Name(name) => Some(name),
        Item::Named { name } => name,
    });
    Ok(names.collect())
}

/// Maps one record given as JSON text, for tests (a sync maps the records of a page with `Mapper`). Panics
/// unless `text` is one JSON value.
#[cfg(test)]
pub fn map_json(text: &str, stamp: &RunStamp) -> Mapped {
    match crate::zoho::Page::of_records([text], false) {
        Ok(page) if page.len() == 1 => Mapper::new(stamp).map(&page.get(0).expect("one record")),
        _ => panic!("map_json needs one JSON value, got {text:?}"),
    }
}

#[cfg(test)]
impl std::str::FromStr for RunStamp {
    type Err = std::convert::Infallible;
    /// A stamp with this run id, synced now, with the standard columns.
    fn from_str(run_id: &str) -> Result<Self, Self::Err> {
        Ok(RunStamp { run_id: run_id.into(), synced_at: Utc::now(), columns: Arc::new(Columns::new(&[])) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{format_instant, FieldType};
    use crate::zoho::Page;

    fn stamp() -> RunStamp {
        "run-1".parse().unwrap()
    }

    fn map(json: &str) -> Mapped {
        map_json(json, &stamp())
    }

    fn row(json: &str) -> DealRow {
        match map(json) {
            Mapped::Row(r) => *r,
            other => panic!("expected a row, got {other:?}"),
        }
    }

    /// The text of a standard column of a row.
    fn text(r: &DealRow, column: &str) -> Option<String> {
        r.get(&schema::columns(&[]), column).and_then(|v| v.as_str()).map(String::from)
    }

    fn names(r: &DealRow) -> Vec<String> {
        match r.get(&schema::columns(&[]), "tags") {
            Some(Value::TextList(l)) => l.iter().map(|s| s.to_string()).collect(),
            other => panic!("tags: {other:?}"),
        }
    }

    fn decimal_of(r: &DealRow, column: &str) -> Option<String> {
        match r.get(&schema::columns(&[]), column) {
            Some(Value::Decimal(d)) => Some(d.to_string()),
            Some(Value::Null) => None,
            other => panic!("{column}: {other:?}"),
        }
    }

    fn reason(json: &str) -> String {
        match map(json) {
            Mapped::Quarantined(q) => q.reason,
            other => panic!("expected quarantine, got {other:?}"),
        }
    }

    const GOOD: &str = r#"{"id":"4876876000001034017","Deal_Name":"Zylker GmbH – renewal ✓","Stage":"Closed Won",
        "Amount":12345678901.25,"Expected_Revenue":0.10,"Exchange_Rate":0.92,"Currency":"EUR","Probability":100,
        "Closing_Date":"2026-11-27","Account_Name":{"name":"Zylker GmbH","id":"4876876000000624001"},
        "Contact_Name":null,"Owner":{"name":"Patricia Boyle","id":"4876876000000225013","email":"p.boyle@zylker.com"},
        "Pipeline":"Standard (Standard)","Type":"Existing Business","Lead_Source":"Partner",
        "Tag":[{"name":"renewal","id":"1"},{"name":"eu","id":"2"}],"Created_Time":"2026-10-17T09:12:44+05:30",
        "Modified_Time":"2026-11-27T10:00:00+05:30","Contract_Value":52000.0}"#;

    #[test]
    fn a_complete_record_maps_every_field_exactly() {
        let r = row(GOOD);
        assert_eq!(r.deal_id(), "4876876000001034017");
        assert_eq!(r.amount().unwrap().to_string(), "12345678901.25");
        assert_eq!(decimal_of(&r, "expected_revenue").as_deref(), Some("0.1"));
        assert_eq!(decimal_of(&r, "exchange_rate").as_deref(), Some("0.92"));
        assert_eq!(r.closing_date().unwrap().to_string(), "2026-11-27");
        assert_eq!(format_instant(&r.modified_time()), "2026-11-27T04:30:00Z");
        assert_eq!(text(&r, "owner_email").as_deref(), Some("p.boyle@zylker.com"));
        assert_eq!(text(&r, "contact_id"), None);
        assert_eq!(names(&r), vec!["renewal", "eu"]);
        assert!(r.raw().get().contains("Contract_Value"), "raw keeps custom fields");
        assert_eq!(r.raw().get(), GOOD, "raw is the record exactly as received");
    }

    #[test]
    fn a_json_line_holds_every_column_and_the_record_verbatim() {
        let r = row(GOOD);
        let mut buf = Vec::new();
        r.write_json_line(&schema::columns(&[]), &mut buf);
        let line = std::str::from_utf8(&buf).unwrap();
        assert!(line.ends_with(&format!(",\"raw\":{GOOD}}}\n")), "raw last and verbatim: {line}");
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v.as_object().unwrap().len(), schema::STANDARD.len());
        assert_eq!(v["raw"], serde_json::from_str::<serde_json::Value>(GOOD).unwrap());
        assert_eq!(
            (v["deal_id"].as_str(), v["amount"].as_str(), v["exchange_rate"].as_str()),
            (Some("4876876000001034017"), Some("12345678901.25"), Some("0.92"))
        );
        assert_eq!(
            (v["closing_date"].as_str(), v["modified_time"].as_str(), v["probability"].as_i64()),
            (Some("2026-11-27"), Some("2026-11-27T04:30:00Z"), Some(100))
        );
        assert_eq!(
            (v["tags"].clone(), v["deleted_time"].clone()),
            (serde_json::json!(["renewal", "eu"]), serde_json::Value::Null)
        );
    }

    #[test]
    fn decimals_are_written_in_their_shortest_exact_form() {
        for (text, want) in [("-0.000", "0"), ("52000.00", "52000"), ("-0.0025", "-0.0025"), ("1e3", "1000")] {
            let d = if text.contains('e') { Decimal::from_scientific(text) } else { text.parse() }.unwrap();
            assert_eq!(serde_json::to_string(&Value::Decimal(d)).unwrap(), format!("\"{want}\""), "{text}");
        }
    }

    #[test]
    fn money_never_passes_through_a_float() {
        let q = reason(&GOOD.replace("12345678901.25", "0.30000000000000004"));
        assert!(q.starts_with("Amount:"), "{q}");
        let r = row(&GOOD.replace("12345678901.25", "\"1234.5\""));
        assert_eq!(r.amount().unwrap().to_string(), "1234.5");
        let r = row(&GOOD.replace("12345678901.25", "1.5e3"));
        assert_eq!(r.amount().unwrap().to_string(), "1500");
    }

    #[test]
    fn a_stage_that_only_contains_closed_won_is_not_ours() {
        match map(&GOOD.replace("\"Closed Won\"", "\"Closed Won - Pending Finance\"")) {
            Mapped::NotClosedWon { deal_id, stage } => {
                assert_eq!(deal_id.as_deref(), Some("4876876000001034017"));
                assert_eq!(stage.as_deref(), Some("Closed Won - Pending Finance"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_records_are_quarantined_with_the_field_named() {
        assert_eq!(reason(&GOOD.replace("\"id\":\"4876876000001034017\",", "")), "id: missing");
        assert!(reason(&GOOD.replace("\"2026-11-27\"", "\"27/11/2026\"")).starts_with("Closing_Date: \"27/11/2026\""));
        assert!(reason(&GOOD.replace("12345678901.25", "\"abc\"")).starts_with("Amount:"));
        assert!(
            reason(&GOOD.replace("\"Modified_Time\":\"2026-11-27T10:00:00+05:30\",", "")).starts_with("Modified_Time")
        );
        assert!(reason(&GOOD.replace("\"Probability\":100", "\"Probability\":99.5")).starts_with("Probability"));
        assert!(reason(&GOOD.replace("{\"name\":\"Zylker GmbH\",\"id\":\"4876876000000624001\"}", "\"Zylker\""))
            .starts_with("Account_Name"));
        assert!(reason("[1,2]").starts_with("record"));
    }

    #[test]
    fn records_of_one_page_map_as_each_would_alone_whatever_their_key_order() {
        let reordered = {
            let (head, tail) = GOOD.split_at(GOOD.find(",\"Deal_Name\"").unwrap());
            format!("{{{},{}}}", &tail[1..tail.len() - 1], &head[1..])
        };
        let records = [
            GOOD.to_string(),
            reordered,
            GOOD.replace("\"Stage\"", "\"St\\u0061ge\""),
            GOOD.replace("\"Amount\":12345678901.25,", ""),
            GOOD.replace("\"Deal_Name\"", "\"Stage\""),
            GOOD.replace("12345678901.25", "\"lots\""),
            GOOD.to_string(),
        ];
        let page = Page::of_records(&records, false).unwrap();
        let st = stamp();
        let mut mapper = Mapper::new(&st);
        for (rec, text) in page.records().zip(&records) {
            let alone = format!("{:?}", map_json(text, &st));
            assert_eq!(format!("{:?}", mapper.map(&rec)), alone, "{text}");
        }
        assert!(matches!(map_json(&records[1], &st), Mapped::Row(_)), "the reordered record is a row");
        assert!(matches!(map_json(&records[4], &st), Mapped::Quarantined(_)), "a repeated key is refused");
    }

    #[test]
    fn null_amounts_and_lookups_are_empty_not_errors() {
        let r = row(&GOOD.replace("12345678901.25", "null").replace("\"Owner\":{", "\"Ownr\":{"));
        assert_eq!(r.amount(), None);
        assert_eq!(text(&r, "owner_id"), None);
    }

    #[test]
    fn a_lone_surrogate_escape_quarantines_its_record_naming_the_field_and_raw_keeps_it() {
        let bad = GOOD.replace("Zylker GmbH – renewal ✓", r"bad \udc00 and \ud800x");
        let Mapped::Quarantined(q) = map(&bad) else { panic!("quarantined") };
        assert!(q.reason.starts_with("Deal_Name: lone leading surrogate"), "{}", q.reason);
        assert_eq!(q.deal_id.as_deref(), Some("4876876000001034017"));
        assert_eq!(q.raw.get(), bad, "raw is the record as received");
        let r = row(&GOOD.replace("Zylker GmbH – renewal ✓", r"pair \ud83d\ude80 \\udc00"));
        assert_eq!(text(&r, "deal_name").as_deref(), Some("pair 🚀 \\udc00"), "a surrogate pair is one character");
    }

    #[test]
    fn a_record_nested_deeper_than_the_parser_reads_is_quarantined_and_its_page_neighbours_map() {
        let deep = GOOD
            .replace("\"Contract_Value\":52000.0", &format!("\"Custom\":{}1{}", "[".repeat(2000), "]".repeat(2000)));
        let page = Page::of_records([GOOD, deep.as_str(), GOOD], false).unwrap();
        let st = stamp();
        let mapped: Vec<Mapped> = page.records().map(|r| Mapper::new(&st).map(&r)).collect();
        assert!(matches!(mapped[0], Mapped::Row(_)) && matches!(mapped[2], Mapped::Row(_)), "{mapped:?}");
        let alone = format!("{:?}", map_json(GOOD, &st));
        assert_eq!((format!("{:?}", mapped[0]), format!("{:?}", mapped[2])), (alone.clone(), alone));
        let Mapped::Quarantined(q) = &mapped[1] else { panic!("{:?}", mapped[1]) };
        assert!(
            q.reason.starts_with("record: `Custom`: nested deeper than serde_json reads (recursion limit exceeded"),
            "{}",
            q.reason
        );
        assert_eq!(q.deal_id.as_deref(), Some("4876876000001034017"), "the id is read at any depth");
        assert_eq!(q.raw.get(), deep);
        let nested = |levels: usize| {
            map(&GOOD.replace(
                "\"Contract_Value\":52000.0",
                &format!("\"Custom\":{}1{}", "[".repeat(levels), "]".repeat(levels)),
            ))
        };
        assert!(matches!(nested(MAX_DEPTH - 1), Mapped::Row(_)), "as deep as serde_json reads is fine");
        assert!(matches!(nested(MAX_DEPTH), Mapped::Quarantined(_)));
        let wide = GOOD.replace("\"Contract_Value\":52000.0", &format!("\"Custom\":[{}[]]", "[],".repeat(500)));
        assert!(matches!(map(&wide), Mapped::Row(_)), "many brackets are not many levels");
    }

    #[test]
    fn odd_but_readable_shapes_map() {
        let huge = "x".repeat(100_000);
        let r = row(&GOOD
            .replace("\"Contract_Value\":52000.0", &format!("\"Description\":\"{huge}\",\"Unknown\":{{\"a\":[1,2]}}")));
        assert!(r.raw().get().len() > 100_000);
        let r = row(&GOOD.replace("\"Closing_Date\":\"2026-11-27\",", ""));
        assert_eq!(r.closing_date(), None, "a missing closing date is empty, not an error");
        let r = row(&GOOD.replace("12345678901.25", "\"9999999999999999999.123456789\""));
        assert_eq!(r.amount().unwrap().to_string(), "9999999999999999999.123456789");
        assert!(reason(&GOOD.replace("12345678901.25", "123456789012345678901234567890.5")).starts_with("Amount:"));
        assert!(reason(&GOOD.replace("\"2026-11-27\"", "\"2026-11-27T00:00:00Z\"")).starts_with("Closing_Date:"));
        assert!(reason(&GOOD.replace("\"2026-11-27T10:00:00+05:30\"", "\"27 Nov 2026\"")).starts_with("Modified_Time:"));
    }

    #[test]
    fn promoted_fields_are_read_in_the_same_pass_standard_ones_included() {
        let promoted = [
            Promoted { field: "Contract_Value".into(), column: "contract_value".into(), ty: FieldType::Decimal },
            Promoted { field: "Account_Name".into(), column: "account".into(), ty: FieldType::LookupName },
            Promoted { field: "Missing".into(), column: "missing".into(), ty: FieldType::Text },
        ];
        let stamp = RunStamp { columns: Arc::new(Columns::new(&promoted)), ..stamp() };
        let columns = &stamp.columns.columns;
        let Mapped::Row(r) = map_json(GOOD, &stamp) else { panic!() };
        assert_eq!(r.values.len(), schema::STANDARD.len() + 3);
        assert_eq!(r.get(columns, "contract_value"), Some(&Value::Decimal("52000".parse().unwrap())));
        assert_eq!(r.get(columns, "account"), Some(&Value::Text("Zylker GmbH".into())));
        assert_eq!(r.get(columns, "missing"), Some(&Value::Null));
        assert_eq!(
            r.get(columns, "account_name"),
            Some(&Value::Text("Zylker GmbH".into())),
            "the standard column is still filled"
        );
        let mut line = Vec::new();
        r.write_json_line(columns, &mut line);
        let json: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(
            (json["contract_value"].clone(), json["missing"].clone()),
            ("52000".into(), serde_json::Value::Null)
        );

        let bad = GOOD.replace("\"Contract_Value\":52000.0", "\"Contract_Value\":\"n/a\"");
        match map_json(&bad, &stamp) {
            Mapped::Quarantined(q) => assert!(q.reason.starts_with("Contract_Value:"), "{}", q.reason),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_repeated_key_is_quarantined_and_an_escaped_key_is_read() {
        let twice = GOOD.replace("\"Stage\":\"Closed Won\"", "\"Stage\":\"Closed Won\",\"Stage\":\"Closed Lost\"");
        assert!(reason(&twice).contains("duplicate field `Stage`"), "{}", reason(&twice));
        let escaped = row(&GOOD.replace("\"Deal_Name\"", "\"Deal\\u005fName\""));
        assert_eq!(text(&escaped, "deal_name").as_deref(), Some("Zylker GmbH – renewal ✓"));
    }

    #[test]
    fn values_with_escapes_are_read_unescaped_like_plain_ones() {
        let escaped = GOOD
            .replace("\"4876876000001034017\"", "\"48768760000010340\\u00317\"")
            .replace("\"Zylker GmbH – renewal ✓\"", "\"Zylker \\\"GmbH\\\"\\nrenewal\"")
            .replace("\"2026-11-27\"", "\"2026\\u002d11-27\"")
            .replace("\"2026-11-27T10:00:00+05:30\"", "\"2026-11-27T10:00:00\\u002b05:30\"")
            .replace("\"EUR\"", "\"\\u0045UR\"");
        let (e, p) = (row(&escaped), row(GOOD));
        assert_eq!(e.deal_id(), "4876876000001034017");
        assert_eq!(text(&e, "deal_name").as_deref(), Some("Zylker \"GmbH\"\nrenewal"));
        assert_eq!(
            (e.closing_date(), e.modified_time(), e.currency()),
            (p.closing_date(), p.modified_time(), Some("EUR"))
        );
        assert_ne!(e.raw().get(), p.raw().get(), "raw keeps the escapes as sent");
    }

    #[test]
    fn numeric_ids_and_string_tags_are_accepted() {
        let r = row(&GOOD
            .replace("\"4876876000001034017\"", "4876876000001034017")
            .replace("[{\"name\":\"renewal\",\"id\":\"1\"},{\"name\":\"eu\",\"id\":\"2\"}]", "[\"a\",\"b\"]"));
        assert_eq!(r.deal_id(), "4876876000001034017");
        assert_eq!(names(&r), vec!["a", "b"]);
    }
}
