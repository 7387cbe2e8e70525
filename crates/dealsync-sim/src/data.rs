//! The simulator's deals: generated from a seed, so that a test, the demo and the benchmark can all know the
//! truth they should end up with; stored compactly (a million deals fit in well under 100 MB) and rendered to
//! Zoho's JSON shape only when a page is served. The generator includes the awkward records real CRMs hold:
//! unicode names, null amounts, 100 KB descriptions, huge and tiny amounts, stages that merely contain
//! "Closed Won", and (on request) records that cannot be mapped at all.

use std::fmt::Write;

use chrono::{DateTime, Duration, FixedOffset, NaiveDate, SecondsFormat, TimeZone, Utc};
use rust_decimal::Decimal;

/// A small, fast, seedable generator (SplitMix64): the same seed gives the same deals on every platform.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

pub const STAGES: &[&str] = &[
    "Qualification",
    "Needs Analysis",
    "Value Proposition",
    "Identify Decision Makers",
    "Proposal/Price Quote",
    "Negotiation/Review",
    "Closed Lost",
    "Closed Lost to Competition",
];
pub const CLOSED_WON: &str = "Closed Won";
/// Stages that contain the text "Closed Won" but are not it: Zoho's `equals` returns them too.
pub const TRAP_STAGES: &[&str] = &["Closed Won - Pending Finance", "Not Closed Won", "closed won (legacy)"];

const CURRENCIES: &[(&str, &str, &str)] =
    &[("USD", "$", "1"), ("EUR", "€", "0.92"), ("INR", "Rs.", "83.125"), ("JPY", "¥", "151.5"), ("GBP", "£", "0.79")];
const OWNERS: &[(&str, &str)] = &[
    ("Patricia Boyle", "p.boyle@zylker.com"),
    ("Kenji Watanabe", "k.watanabe@zylker.com"),
    ("Amara Okafor", "a.okafor@zylker.com"),
    ("Lucía Fernández", "l.fernandez@zylker.com"),
];
const ACCOUNTS: &[&str] = &["Zylker GmbH", "Acme Corp", "Globex", "Initech", "Umbrella plc", "Soylent & Co", "Hooli"];
const UNICODE_NAMES: &[&str] = &[
    "Müller & Söhne – Jahresvertrag",
    "東京商事 年間契約",
    "شركة الرياض - تجديد",
    "🚀 Rocket \"Launch\" deal",
    "Line\nbreak\tand \\ backslash",
    "Ünïcødé, (parens) and, commas",
];
const LEAD_SOURCES: &[&str] = &["Partner", "Web Download", "Cold Call", "Trade Show", "Advertisement"];
const TYPES: &[&str] = &["New Business", "Existing Business"];
const TAGS: &[&str] = &["renewal", "enterprise", "q4-push", "emea", "strategic"];

/// Ways a record can be broken, for the quarantine path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broken {
    ClosingDateFormat,
    MissingId,
    AmountText,
    ProbabilityFraction,
    /// A custom field nested 2,000 levels deep: the record cannot be read at all, its stage included. Never in
    /// the generated mix; tests set it.
    NestedTooDeep,
}

const BROKEN: [Broken; 4] =
    [Broken::ClosingDateFormat, Broken::MissingId, Broken::AmountText, Broken::ProbabilityFraction];

/// One deal as the simulator stores it.
#[derive(Debug, Clone)]
pub struct SimDeal {
    pub id: u64,
    pub stage: &'static str,
    /// Unix seconds.
    pub modified: i64,
    pub created: i64,
    pub closing: NaiveDate,
    pub amount: Option<Decimal>,
    pub currency: u8,
    pub owner: u8,
    pub account: u16,
    pub contact: Option<u32>,
    pub name_kind: u8,
    pub tags: u8,
    pub huge_description: bool,
    pub broken: Option<Broken>,
    pub deleted: bool,
    /// When it went to the recycle bin (unix seconds), for `/Deals/deleted`.
    pub deleted_at: Option<i64>,
    /// Submitted for approval and not approved yet: search leaves it out unless asked for `approved=both`.
    pub awaiting_approval: bool,
    /// The record as search renders it, kept once rendered so that the simulator's own time stays small beside
    /// the latency it simulates; whoever changes the deal resets it.
    pub rendered: std::sync::OnceLock<Box<str>>,
}

impl SimDeal {
    pub fn is_closed_won(&self) -> bool {
        self.stage == CLOSED_WON
    }

    pub fn id_string(&self) -> String {
        self.id.to_string()
    }

    pub fn modified_at(&self) -> DateTime<Utc> {
        Utc.timestamp_opt(self.modified, 0).single().expect("valid timestamp")
    }

    pub fn deal_name(&self) -> String {
        if self.name_kind > 0 {
            UNICODE_NAMES[(self.name_kind as usize - 1) % UNICODE_NAMES.len()].to_string()
        } else {
            format!("{} - deal {}", ACCOUNTS[self.account as usize % ACCOUNTS.len()], self.id % 100_000)
        }
    }

    pub fn currency_code(&self) -> &'static str {
        CURRENCIES[self.currency as usize].0
    }

    pub fn lead_source(&self) -> &'static str {
        LEAD_SOURCES[(self.id % LEAD_SOURCES.len() as u64) as usize]
    }

    pub fn deal_type(&self) -> &'static str {
        TYPES[(self.id % 2) as usize]
    }

    /// Renders the deal as search returns it, times in `tz`. `fields`: only these keys (plus `id`).
    pub fn render(&self, tz: FixedOffset, fields: Option<&[&str]>, out: &mut String) {
        self.render_view(tz, View { fields, ..View::default() }, out)
    }

    /// Renders the deal in the shape of one API's answer (see `View`).
    pub fn render_view(&self, tz: FixedOffset, view: View<'_>, out: &mut String) {
        let mut w = ObjectWriter::new(out, view);
        let ts =
            |secs: i64| tz.timestamp_opt(secs, 0).single().expect("valid").to_rfc3339_opts(SecondsFormat::Secs, false);
        let (owner_name, owner_email) = OWNERS[self.owner as usize % OWNERS.len()];
        let owner_id = 4_876_876_000_000_225_013u64 + self.owner as u64;
        // COQL returns a user lookup with its name and id, without the e-mail address.
        let owner = if view.coql {
            format!("{{\"name\":{},\"id\":\"{owner_id}\"}}", json_str(owner_name))
        } else {
            format!("{{\"name\":{},\"id\":\"{owner_id}\",\"email\":{}}}", json_str(owner_name), json_str(owner_email))
        };
        let (cur, sym, rate) = CURRENCIES[self.currency as usize];
        let amount_json = match (self.broken, self.amount) {
            (Some(Broken::AmountText), _) => "\"twelve thousand\"".to_string(),
            (_, Some(a)) => a.to_string(),
            (_, None) => "null".to_string(),
        };
        let expected = match self.amount {
            Some(a) => (a * Decimal::new(9, 1)).round_dp(2).to_string(),
            None => "null".into(),
        };
        w.raw("Owner", &owner);
        if self.huge_description {
            let text = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. ".repeat(1800);
            w.raw("Description", &json_str(&text));
        } else {
            w.raw("Description", "null");
        }
        w.raw("$currency_symbol", &json_str(sym));
        w.raw("Campaign_Source", "null");
        w.raw("$review_process", "{\"approve\":false,\"reject\":false,\"resubmit\":false}");
        w.raw("$followers", "null");
        match self.broken {
            Some(Broken::ClosingDateFormat) => {
                w.raw("Closing_Date", &json_str(&self.closing.format("%d/%m/%Y").to_string()))
            }
            _ => w.raw("Closing_Date", &json_str(&self.closing.format("%Y-%m-%d").to_string())),
        }
        w.raw("Last_Activity_Time", &json_str(&ts(self.modified)));
        w.raw("Modified_By", &owner);
        w.raw("$review", "null");
        w.raw("Lead_Conversion_Time", "null");
        w.raw("$state", "\"save\"");
        w.raw("$process_flow", "false");
        w.raw("Deal_Name", &json_str(&self.deal_name()));
        w.raw("Exchange_Rate", rate);
        w.raw("Expected_Revenue", &expected);
        w.raw("Currency", &json_str(cur));
        w.raw("Overall_Sales_Duration", &((self.modified - self.created) / 86_400).to_string());
        w.raw("Stage", &json_str(self.stage));
        w.raw(
            "Account_Name",
            &format!(
                "{{\"name\":{},\"id\":\"{}\"}}",
                json_str(ACCOUNTS[self.account as usize % ACCOUNTS.len()]),
                4_876_876_000_000_624_001u64 + self.account as u64
            ),
        );
        if self.broken != Some(Broken::MissingId) {
            w.raw("id", &format!("\"{}\"", self.id));
        }
        w.raw("$approved", if self.awaiting_approval { "false" } else { "true" });
        w.raw("$approval", "{\"delegate\":false,\"approve\":false,\"reject\":false,\"resubmit\":false}");
        w.raw("$approval_state", if self.awaiting_approval { "\"approval_process_pending\"" } else { "\"approved\"" });
        w.raw("$editable", "true");
        w.raw("$in_merge", "false");
        w.raw("$orchestration", "false");
        w.raw("$locked_for_me", "false");
        w.raw("Created_Time", &json_str(&ts(self.created)));
        w.raw("Modified_Time", &json_str(&ts(self.modified)));
        w.raw("Created_By", &owner);
        w.raw("Amount", &amount_json);
        let probability = match self.broken {
            Some(Broken::ProbabilityFraction) => "99.5".to_string(),
            _ if self.is_closed_won() => "100".to_string(),
            _ => ((self.id % 9) * 10 + 10).to_string(),
        };
        w.raw("Probability", &probability);
        w.raw("Next_Step", "null");
        if self.broken == Some(Broken::NestedTooDeep) {
            w.raw("Custom_Nested", &format!("{}1{}", "[".repeat(2000), "]".repeat(2000)));
        }
        match self.contact {
            Some(c) => w.raw(
                "Contact_Name",
                &format!("{{\"name\":\"Contact {c}\",\"id\":\"{}\"}}", 4_876_876_000_000_624_107u64 + c as u64),
            ),
            None => w.raw("Contact_Name", "null"),
        }
        w.raw("Sales_Cycle_Duration", &((self.modified - self.created) / 86_400).to_string());
        w.raw("Type", &json_str(self.deal_type()));
        w.raw("Lead_Source", &json_str(self.lead_source()));
        w.raw("Pipeline", "\"Standard (Standard)\"");
        w.raw("Reason_For_Loss__s", "null");
        w.raw("Record_Status__s", "\"Available\"");
        w.raw("Locked__s", "false");
        w.raw("Layout", "{\"name\":\"Standard\",\"id\":\"4876876000000091023\"}");
        let mut tags = String::from("[");
        for (i, t) in TAGS.iter().enumerate().filter(|(i, _)| self.tags & (1 << i) != 0) {
            if tags.len() > 1 {
                tags.push(',');
            }
            let _ = write!(tags, "{{\"name\":\"{t}\",\"id\":\"48768760000009{i:05}\",\"color_code\":\"#57B1FD\"}}");
        }
        tags.push(']');
        w.raw("Tag", &tags);
        w.raw("Territory", "null");
        w.raw("Change_Log_Time__s", &json_str(&ts(self.modified)));
        w.raw("$sharing_permission", "\"full_access\"");
        w.raw("$zia_owner_assignment", "\"owner_recommendation_unavailable\"");
        w.raw("$wizard_connection_path", "null");
        // Custom fields, as an org would have them.
        w.raw(
            "Contract_Value",
            &self.amount.map(|a| (a * Decimal::new(11, 1)).round_dp(2).to_string()).unwrap_or("null".into()),
        );
        w.raw("Region", &json_str(["EMEA", "APAC", "AMER"][(self.id % 3) as usize]));
        w.raw("Seats", &((self.id % 500) + 1).to_string());
        w.raw("Partner_Tier", if self.id.is_multiple_of(4) { "\"Gold\"" } else { "null" });
        w.raw("Signed_Contract", if self.is_closed_won() { "true" } else { "false" });
        w.raw("Discount_Percent", &format!("{}.5", self.id % 20));
        w.raw("Competitor", "null");
        w.raw("Forecast_Category", if self.is_closed_won() { "\"Closed\"" } else { "\"Pipeline\"" });
        w.raw("Invoice_Number", &format!("\"INV-{:07}\"", self.id % 10_000_000));
        w.raw("Lead_Score", &(self.id % 97).to_string());
        w.raw("Renewal_Date", &json_str(&(self.closing + Duration::days(365)).format("%Y-%m-%d").to_string()));
        w.finish();
    }
}

/// How a record is rendered: which fields, and in which API's shape.
#[derive(Debug, Clone, Copy, Default)]
pub struct View<'a> {
    /// Only these fields (plus `id`); every field when `None`.
    pub fields: Option<&'a [&'a str]>,
    /// Zoho's `$` system keys come with a projection too (records by id), not with search's or COQL's.
    pub system_keys: bool,
    /// COQL's shape: user lookups without the e-mail address.
    pub coql: bool,
}

/// Writes `{"k":v,…}`, skipping keys outside an optional projection (`id` is always kept).
struct ObjectWriter<'a> {
    out: &'a mut String,
    view: View<'a>,
    first: bool,
}

impl<'a> ObjectWriter<'a> {
    fn new(out: &'a mut String, view: View<'a>) -> Self {
        out.push('{');
        ObjectWriter { out, view, first: true }
    }

    fn raw(&mut self, key: &str, value: &str) {
        if let Some(f) = self.view.fields {
            let system = self.view.system_keys && key.starts_with('$');
            if key != "id" && !system && !f.contains(&key) {
                return;
            }
        }
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        self.out.push('"');
        self.out.push_str(key);
        self.out.push_str("\":");
        self.out.push_str(value);
    }

    fn finish(self) {
        self.out.push('}');
    }
}

pub fn json_str(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialize")
}

/// How to generate a dataset.
#[derive(Debug, Clone)]
pub struct GenSpec {
    pub deals: usize,
    pub seed: u64,
    /// Modified times are spread over `[anchor - span, anchor)`.
    pub anchor: DateTime<Utc>,
    pub span: Duration,
    /// How many closed-won deals are rendered broken (for the quarantine path).
    pub broken: usize,
    /// Share of deals that are exactly "Closed Won"; a sixth of the rest are look-alike stages.
    pub won_share: f64,
    /// Closed-won deals (spread over the span) that await approval.
    pub awaiting_approval: usize,
}

/// Generates deals sorted by `modified`.
pub fn generate(spec: &GenSpec) -> Vec<SimDeal> {
    let mut rng = Rng::new(spec.seed);
    let span = spec.span.num_seconds().max(1) as u64;
    let start = spec.anchor.timestamp() - span as i64;
    let mut deals = Vec::with_capacity(spec.deals);
    let mut broken_left = spec.broken;
    for i in 0..spec.deals {
        let modified = start + rng.below(span) as i64;
        let created = modified - rng.below(90 * 86_400) as i64;
        let roll = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let trap_share = (1.0 - spec.won_share) / 14.0;
        let stage = if roll < spec.won_share {
            CLOSED_WON
        } else if roll < spec.won_share + trap_share {
            TRAP_STAGES[rng.below(TRAP_STAGES.len() as u64) as usize]
        } else {
            STAGES[rng.below(STAGES.len() as u64) as usize]
        };
        let closing = Utc.timestamp_opt(modified, 0).single().expect("valid").date_naive()
            + Duration::days(rng.below(15) as i64 - 7);
        let amount = match rng.below(100) {
            0..=2 => None,
            3 => Some(Decimal::new(1_234_567_890_125, 2)),
            4 => Some(Decimal::new(10, 2)),
            _ => Some(Decimal::new(rng.below(50_000_000) as i64 + 100, 2)),
        };
        let broken = if stage == CLOSED_WON && broken_left > 0 {
            broken_left -= 1;
            Some(BROKEN[broken_left % BROKEN.len()])
        } else {
            None
        };
        deals.push(SimDeal {
            id: 4_876_876_000_001_000_000 + i as u64,
            stage,
            modified,
            created,
            closing,
            amount,
            currency: rng.below(CURRENCIES.len() as u64) as u8,
            owner: rng.below(OWNERS.len() as u64) as u8,
            account: rng.below(ACCOUNTS.len() as u64) as u16,
            contact: if rng.chance(0.2) { None } else { Some(rng.below(5000) as u32) },
            name_kind: if rng.chance(0.1) { 1 + rng.below(UNICODE_NAMES.len() as u64) as u8 } else { 0 },
            tags: rng.below(32) as u8 & rng.below(32) as u8,
            huge_description: rng.chance(0.002),
            broken,
            deleted: false,
            deleted_at: None,
            awaiting_approval: false,
            rendered: Default::default(),
        });
    }
    let won: Vec<usize> =
        (0..deals.len()).filter(|&i| deals[i].stage == CLOSED_WON && deals[i].broken.is_none()).collect();
    if spec.awaiting_approval > 0 && !won.is_empty() {
        let step = (won.len() / spec.awaiting_approval).max(1);
        won.iter().step_by(step).take(spec.awaiting_approval).for_each(|&i| deals[i].awaiting_approval = true);
    }
    deals.sort_by_key(|d| (d.modified, d.id));
    deals
}

/// The date a datetime falls on in UTC, for `Closing_Date` comparisons.
pub fn utc_date(t: DateTime<FixedOffset>) -> NaiveDate {
    t.with_timezone(&Utc).date_naive()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(n: usize) -> GenSpec {
        GenSpec {
            deals: n,
            seed: 7,
            anchor: Utc.timestamp_opt(1_790_000_000, 0).unwrap(),
            span: Duration::days(30),
            broken: 0,
            won_share: 0.3,
            awaiting_approval: 0,
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_deals() {
        let a = generate(&spec(500));
        let b = generate(&spec(500));
        assert_eq!(a.len(), 500);
        assert!(a.iter().zip(&b).all(|(x, y)| x.id == y.id && x.modified == y.modified && x.amount == y.amount));
        assert!(a.windows(2).all(|w| w[0].modified <= w[1].modified));
    }

    #[test]
    fn rendered_records_are_valid_json_with_about_sixty_fields() {
        let tz = FixedOffset::east_opt(19_800).unwrap();
        for d in generate(&spec(300)) {
            let mut s = String::new();
            d.render(tz, None, &mut s);
            let v: serde_json::Value = serde_json::from_str(&s).expect("valid JSON");
            let n = v.as_object().unwrap().len();
            assert!((58..=64).contains(&n), "{n} fields");
        }
    }

    #[test]
    fn a_projection_keeps_only_the_named_fields_and_id() {
        let d = &generate(&spec(1))[0];
        let mut s = String::new();
        d.render(FixedOffset::east_opt(0).unwrap(), Some(&["Stage", "Amount"]), &mut s);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        let mut keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(keys, vec!["Amount", "Stage", "id"]);
    }
}
