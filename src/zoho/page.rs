//! One page of records (search, COQL, deleted records, records by id), read by serde_json: `{"data": [...],
//! "info": {"more_records": ...}}`. Each record is kept verbatim (serde_json's `RawValue`), so that `raw` is
//! exactly what Zoho sent; its fields are read from it when it is used.

use std::borrow::Cow;
use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

/// One record of a page, exactly as received (checked JSON).
pub type Record<'a> = &'a RawValue;

#[derive(Debug, Default)]
pub struct Page {
    records: Vec<Box<RawValue>>,
    pub more_records: bool,
}

/// Zoho's answer; other members (`info.count`, `info.page`, …) are not read.
#[derive(Deserialize)]
struct Answer {
    data: Option<Vec<Box<RawValue>>>,
    info: Option<Info>,
}

#[derive(Deserialize)]
struct Info {
    #[serde(default)]
    more_records: bool,
}

impl Page {
    /// Reads an answer `{"data": [...], "info": {...}}`; the error says what is wrong and where.
    pub fn parse(body: &str) -> Result<Page, String> {
        let answer: Answer = serde_json::from_str(body).map_err(|e| {
            let what = if e.is_data() { "not a page of records" } else { "not valid JSON" };
            format!("{what} ({e})")
        })?;
        // `null` reads as no data too.
        let records = answer.data.ok_or("the answer has no `data` array")?;
        Ok(Page { records, more_records: answer.info.is_some_and(|i| i.more_records) })
    }

    /// A page holding these records (each must be JSON), as if Zoho had sent them.
    pub fn of_records(records: impl IntoIterator<Item = impl AsRef<str>>, more_records: bool) -> Result<Page, String> {
        let records: Vec<String> = records.into_iter().map(|r| r.as_ref().to_owned()).collect();
        Page::parse(&format!(r#"{{"data":[{}],"info":{{"more_records":{more_records}}}}}"#, records.join(",")))
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn get(&self, i: usize) -> Option<Record<'_>> {
        self.records.get(i).map(|r| &**r)
    }

    pub fn records(&self) -> impl DoubleEndedIterator<Item = Record<'_>> + ExactSizeIterator {
        self.records.iter().map(|r| &**r)
    }
}

/// A Zoho id as text: a string of digits (as Zoho writes them) or a JSON integer. `None` for anything else.
/// Every id dealsync reads (a deal's, a lookup's, a deleted deal's) is read here.
pub fn read_id(value: &RawValue) -> Option<String> {
    let text = value.get();
    let id = if text.starts_with('"') { serde_json::from_str::<String>(text).ok()? } else { text.to_string() };
    let id = id.trim();
    (!id.is_empty() && id.len() <= 40 && id.bytes().all(|b| b.is_ascii_digit())).then(|| id.to_string())
}

pub fn record_id(record: Record<'_>) -> Option<String> {
    #[derive(Deserialize)]
    struct IdOnly<'a> {
        #[serde(borrow)]
        id: Option<&'a RawValue>,
    }
    serde_json::from_str::<IdOnly>(record.get()).ok()?.id.and_then(read_id)
}

/// An object's members in the order received, repeated names included: each name unescaped (borrowed unless it
/// had escapes) and each value as sent.
pub struct Members<'a>(pub Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Name<'a>(#[serde(borrow)] Cow<'a, str>);
        struct Each;
        impl<'de> Visitor<'de> for Each {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'de>, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some((Name(name), value)) = map.next_entry()? {
                    members.push((name, value));
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(Each)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_kept_as_written() {
        let body = r#" { "info" : {"more_records":true,"sort_by":"Modified_Time"}, "data" : [ {"id":"1", "Stage" : "Closed Won","x":{"y":[1]}} , 7, {"\u0069d":"2"} ] } "#;
        let page = Page::parse(body).unwrap();
        assert_eq!(page.len(), 3);
        assert!(page.more_records);
        assert_eq!(page.get(0).unwrap().get(), r#"{"id":"1", "Stage" : "Closed Won","x":{"y":[1]}}"#);
        assert_eq!(page.get(1).unwrap().get(), "7");
        assert_eq!(page.records().last().map(record_id), Some(Some("2".to_string())), "escaped keys are read by name");
    }

    #[test]
    fn members_come_in_order_with_their_names_unescaped_and_their_values_as_sent() {
        let page = Page::of_records([r#"{"a":"x", "b\u0063" : [1, {"c":2}],"d":"e\"f","a":null}"#], false).unwrap();
        let is_object = |r: Record<'_>| serde_json::from_str::<Members>(r.get()).is_ok();
        let Members(members) = serde_json::from_str(page.get(0).unwrap().get()).unwrap();
        let seen: Vec<(&str, &str)> = members.iter().map(|(k, v)| (&**k, v.get())).collect();
        assert_eq!(seen, [("a", "\"x\""), ("bc", "[1, {\"c\":2}]"), ("d", r#""e\"f""#), ("a", "null")]);
        assert!(matches!(members[0].0, Cow::Borrowed(_)) && matches!(members[1].0, Cow::Owned(_)));
        assert!(is_object(page.records().next().unwrap()));
        assert!(Page::of_records(["[1]"], false).map(|p| !is_object(p.get(0).unwrap())).unwrap());
    }

    #[test]
    fn ids_are_digits_as_text_or_as_an_integer() {
        let id = |json: &str| read_id(&serde_json::from_str::<Box<RawValue>>(json).unwrap());
        assert_eq!(id(r#""4876876000001034017""#).as_deref(), Some("4876876000001034017"));
        assert_eq!(id("4876876000001034017").as_deref(), Some("4876876000001034017"));
        assert_eq!(id(r#"" 12\u0033 ""#).as_deref(), Some("123"));
        for bad in [r#""""#, r#""12a""#, "-1", "1.5", "null", "{}", r#""-1""#, &format!("\"{}\"", "1".repeat(41))] {
            assert_eq!(id(bad), None, "{bad}");
        }
    }

    #[test]
    fn bad_answers_are_refused_with_the_reason() {
        let refused = |b: &str| Page::parse(b).unwrap_err();
        assert_eq!(refused(r#"{"data":[{"id":1},]}"#), "not valid JSON (trailing comma at line 1 column 19)");
        assert_eq!(refused(r#"{"info":{}}"#), "the answer has no `data` array");
        assert_eq!(refused(r#"{"data":null}"#), "the answer has no `data` array");
        assert_eq!(
            refused(r#"{"data":{}}"#),
            "not a page of records (invalid type: map, expected a sequence at line 1 column 8)"
        );
        assert!(refused(r#"{"data":[],"data":[]}"#).contains("duplicate field `data`"));
        assert!(refused(r#"{"data":[],"info":{"more_records":"yes"}}"#)
            .starts_with("not a page of records (invalid type: string \"yes\", expected a boolean"));
        assert!(refused("").starts_with("not valid JSON"));
        assert!(refused(r#""data""#).starts_with("not a page of records"));
        assert!(refused(r#"{"data":[]} x"#).contains("trailing characters"), "{}", refused(r#"{"data":[]} x"#));
        assert!(
            refused(r#"{"data":[{"id":"1","Deal_Name":"cut sh"#).starts_with("not valid JSON (EOF while parsing"),
            "a page cut short fails whole"
        );
    }

    #[test]
    fn a_page_made_of_records_reads_them_back() {
        let page = Page::of_records(["{\"id\":\"1\"}", "{\"id\":2}"], true).unwrap();
        assert_eq!(page.records().map(record_id).collect::<Vec<_>>(), [Some("1".into()), Some("2".into())]);
        assert!(page.more_records);
        assert!(Page::of_records(["{"], false).is_err());
    }
}
