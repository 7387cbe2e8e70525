//! The simulator's reading of search criteria and COQL conditions, written independently of dealsync's
//! criteria builder so that a property test can check one against the other. Conditions are compiled once per
//! request (values typed, dates parsed) and then evaluated against each stored deal.
//!
//! As in Zoho, `equals` on a text field matches when the field *contains* the value (case-insensitively);
//! COQL's `=` is exact.

use chrono::{DateTime, NaiveDate};
use rust_decimal::Decimal;
use serde_json::json;

use super::data::{utc_date, SimDeal};

/// A criteria operator, as Zoho names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Equals,
    NotEqual,
    StartsWith,
    GreaterEqual,
    GreaterThan,
    LessEqual,
    LessThan,
    Between,
    In,
}

impl Op {
    pub const ALL: [Op; 9] = [
        Op::Equals,
        Op::NotEqual,
        Op::StartsWith,
        Op::GreaterEqual,
        Op::GreaterThan,
        Op::LessEqual,
        Op::LessThan,
        Op::Between,
        Op::In,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Op::Equals => "equals",
            Op::NotEqual => "not_equal",
            Op::StartsWith => "starts_with",
            Op::GreaterEqual => "greater_equal",
            Op::GreaterThan => "greater_than",
            Op::LessEqual => "less_equal",
            Op::LessThan => "less_than",
            Op::Between => "between",
            Op::In => "in",
        }
    }

    pub fn parse(s: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

/// One `(field:operator:value[,value…])` term, its values unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub field: String,
    pub op: Op,
    pub values: Vec<String>,
}

/// A parsed criteria expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    Cond(Condition),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
}

impl Expr {
    pub fn cond(field: &str, op: Op, values: &[&str]) -> Expr {
        Expr::Cond(Condition { field: field.to_string(), op, values: values.iter().map(|v| v.to_string()).collect() })
    }

    pub fn and(self, other: Expr) -> Expr {
        Expr::And(Box::new(self), Box::new(other))
    }

    pub fn or(self, other: Expr) -> Expr {
        Expr::Or(Box::new(self), Box::new(other))
    }
}

/// Zoho's INVALID_QUERY and friends, ready to be sent as a 400.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryError {
    pub code: &'static str,
    pub message: String,
    pub details: serde_json::Value,
}

impl QueryError {
    pub fn invalid(message: impl Into<String>, details: serde_json::Value) -> Self {
        QueryError { code: "INVALID_QUERY", message: message.into(), details }
    }
}

/// At most this many conditions in one criteria (v8).
pub const MAX_CONDITIONS: usize = 15;

/// Parses a criteria string (already URL-decoded).
pub fn parse(s: &str) -> Result<Expr, QueryError> {
    let mut p = Parser { chars: s.chars().collect(), pos: 0, conditions: 0 };
    p.skip_ws();
    let e = p.group()?;
    p.skip_ws();
    if p.pos != p.chars.len() {
        return Err(QueryError::invalid("invalid query formed", json!({"reason": "text after the criteria"})));
    }
    if p.conditions > MAX_CONDITIONS {
        return Err(QueryError {
            code: "CRITERIA_LIMIT_EXCEEDED",
            message: format!("no of criterium that can be given exceed the limit {MAX_CONDITIONS}"),
            details: json!({}),
        });
    }
    Ok(e)
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
    conditions: usize,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn bad(&self, reason: &str) -> QueryError {
        QueryError::invalid("invalid query formed", json!({"reason": reason, "position": self.pos}))
    }

    fn expect(&mut self, c: char) -> Result<(), QueryError> {
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.bad(&format!("expected `{c}`")))
        }
    }

    /// `( group (and|or group)* )` or `( condition )`.
    fn group(&mut self) -> Result<Expr, QueryError> {
        self.expect('(')?;
        self.skip_ws();
        let expr = if self.peek() == Some('(') {
            let mut left = self.group()?;
            let mut joiner: Option<bool> = None;
            loop {
                self.skip_ws();
                if self.peek() == Some(')') {
                    break;
                }
                let is_and = self.joiner()?;
                if joiner.is_some_and(|j| j != is_and) {
                    return Err(self.bad("mixing and/or needs parentheses"));
                }
                joiner = Some(is_and);
                self.skip_ws();
                let right = self.group()?;
                left = if is_and { left.and(right) } else { left.or(right) };
            }
            left
        } else {
            self.condition()?
        };
        self.skip_ws();
        self.expect(')')?;
        Ok(expr)
    }

    fn joiner(&mut self) -> Result<bool, QueryError> {
        let rest: String = self.chars[self.pos..].iter().take(3).collect::<String>().to_ascii_lowercase();
        if rest.starts_with("and") {
            self.pos += 3;
            Ok(true)
        } else if rest.starts_with("or") {
            self.pos += 2;
            Ok(false)
        } else {
            Err(self.bad("expected and/or between groups"))
        }
    }

    fn condition(&mut self) -> Result<Expr, QueryError> {
        self.conditions += 1;
        let field = self.until_colon()?;
        if field.is_empty() || !field.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$' || c == '.') {
            return Err(self.bad("invalid field name"));
        }
        let op_name = self.until_colon()?;
        let op = Op::parse(&op_name).ok_or_else(|| {
            QueryError::invalid(
                "invalid query formed",
                json!({"reason": "invalid operator", "operator": op_name, "api_name": field}),
            )
        })?;
        let mut values = vec![String::new()];
        loop {
            match self.peek() {
                None => return Err(self.bad("unterminated condition")),
                Some(')') => break,
                Some('\\') => {
                    self.pos += 1;
                    match self.peek() {
                        Some(c) => {
                            values.last_mut().expect("non-empty").push(c);
                            self.pos += 1;
                        }
                        None => return Err(self.bad("dangling backslash")),
                    }
                }
                Some(',') => {
                    values.push(String::new());
                    self.pos += 1;
                }
                Some(c) => {
                    values.last_mut().expect("non-empty").push(c);
                    self.pos += 1;
                }
            }
        }
        let arity_ok = match op {
            Op::Between => values.len() == 2,
            Op::In => (1..=100).contains(&values.len()),
            _ => values.len() == 1,
        };
        if !arity_ok {
            let message =
                if op == Op::In { "Only 100 values are allowed in \"IN\" criteria" } else { "invalid query formed" };
            return Err(QueryError::invalid(message, json!({"reason": "wrong number of values", "api_name": field})));
        }
        Ok(Expr::Cond(Condition { field, op, values }))
    }

    fn until_colon(&mut self) -> Result<String, QueryError> {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c == ':' {
                let s: String = self.chars[start..self.pos].iter().collect();
                self.pos += 1;
                return Ok(s);
            }
            if c == ')' || c == '(' {
                break;
            }
            self.pos += 1;
        }
        Err(self.bad("expected field:operator:value"))
    }
}

/// A field the simulator can filter on, with its type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Stage,
    DealName,
    Currency,
    Type,
    LeadSource,
    ModifiedTime,
    CreatedTime,
    ClosingDate,
    Amount,
    Id,
}

impl Field {
    pub fn parse(name: &str) -> Option<Field> {
        Some(match name {
            "Stage" => Field::Stage,
            "Deal_Name" => Field::DealName,
            "Currency" => Field::Currency,
            "Type" => Field::Type,
            "Lead_Source" => Field::LeadSource,
            "Modified_Time" => Field::ModifiedTime,
            "Created_Time" => Field::CreatedTime,
            "Closing_Date" => Field::ClosingDate,
            "Amount" => Field::Amount,
            "id" => Field::Id,
            _ => return None,
        })
    }

    fn text<'a>(self, d: &'a SimDeal, scratch: &'a mut String) -> &'a str {
        match self {
            Field::Stage => d.stage,
            Field::Currency => d.currency_code(),
            Field::Type => d.deal_type(),
            Field::LeadSource => d.lead_source(),
            _ => {
                *scratch = d.deal_name();
                scratch.as_str()
            }
        }
    }
}

/// A typed comparison against one field.
#[derive(Debug, Clone)]
pub enum Compiled {
    And(Box<Compiled>, Box<Compiled>),
    Or(Box<Compiled>, Box<Compiled>),
    /// `exact`: COQL `=`; otherwise Zoho search's contains-like `equals`.
    Text {
        field: Field,
        op: Op,
        values: Vec<String>,
        exact: bool,
    },
    Time {
        field: Field,
        op: Op,
        values: Vec<i64>,
    },
    Date {
        op: Op,
        values: Vec<NaiveDate>,
    },
    Number {
        op: Op,
        values: Vec<Decimal>,
    },
    Id {
        op: Op,
        values: Vec<u64>,
    },
    IsNull {
        field: Field,
        negated: bool,
    },
}

fn type_error(field: &str, expected: &str) -> QueryError {
    QueryError::invalid(
        "invalid query formed",
        json!({"expected_data_type": expected, "reason": "invalid value for the field's type", "api_name": field}),
    )
}

fn op_error(field: &str, op: Op) -> QueryError {
    QueryError::invalid(
        "invalid query formed",
        json!({"operator": op.as_str(), "reason": "the operator is not supported for this field", "api_name": field}),
    )
}

/// Types one condition.
pub fn compile_condition(c: &Condition, exact_text: bool) -> Result<Compiled, QueryError> {
    let field = Field::parse(&c.field).ok_or_else(|| {
        QueryError::invalid(
            "invalid query formed",
            json!({"reason": "the field is not in the module", "api_name": c.field}),
        )
    })?;
    let op = c.op;
    Ok(match field {
        Field::Stage | Field::DealName | Field::Currency | Field::Type | Field::LeadSource => {
            if matches!(op, Op::GreaterEqual | Op::GreaterThan | Op::LessEqual | Op::LessThan | Op::Between) {
                return Err(op_error(&c.field, op));
            }
            Compiled::Text { field, op, values: c.values.iter().map(|v| v.to_lowercase()).collect(), exact: exact_text }
        }
        Field::ModifiedTime | Field::CreatedTime => {
            if op == Op::StartsWith {
                return Err(op_error(&c.field, op));
            }
            let values = c
                .values
                .iter()
                .map(|v| {
                    DateTime::parse_from_rfc3339(v).map(|t| t.timestamp()).map_err(|_| type_error(&c.field, "datetime"))
                })
                .collect::<Result<_, _>>()?;
            Compiled::Time { field, op, values }
        }
        Field::ClosingDate => {
            if op == Op::StartsWith {
                return Err(op_error(&c.field, op));
            }
            let values = c
                .values
                .iter()
                .map(|v| {
                    NaiveDate::parse_from_str(v, "%Y-%m-%d")
                        .or_else(|_| DateTime::parse_from_rfc3339(v).map(utc_date))
                        .map_err(|_| type_error(&c.field, "date"))
                })
                .collect::<Result<_, _>>()?;
            Compiled::Date { op, values }
        }
        Field::Amount => {
            if op == Op::StartsWith {
                return Err(op_error(&c.field, op));
            }
            let values = c
                .values
                .iter()
                .map(|v| v.parse::<Decimal>().map_err(|_| type_error(&c.field, "currency")))
                .collect::<Result<_, _>>()?;
            Compiled::Number { op, values }
        }
        Field::Id => {
            if op == Op::StartsWith {
                return Err(op_error(&c.field, op));
            }
            let values = c
                .values
                .iter()
                .map(|v| v.parse::<u64>().map_err(|_| type_error(&c.field, "bigint")))
                .collect::<Result<_, _>>()?;
            Compiled::Id { op, values }
        }
    })
}

/// Types a whole criteria expression.
pub fn compile(e: &Expr, exact_text: bool) -> Result<Compiled, QueryError> {
    Ok(match e {
        Expr::Cond(c) => compile_condition(c, exact_text)?,
        Expr::And(a, b) => Compiled::And(Box::new(compile(a, exact_text)?), Box::new(compile(b, exact_text)?)),
        Expr::Or(a, b) => Compiled::Or(Box::new(compile(a, exact_text)?), Box::new(compile(b, exact_text)?)),
    })
}

fn ordered<T: PartialOrd + Copy>(op: Op, v: T, values: &[T]) -> bool {
    match op {
        Op::Equals => v == values[0],
        Op::NotEqual => v != values[0],
        Op::GreaterEqual => v >= values[0],
        Op::GreaterThan => v > values[0],
        Op::LessEqual => v <= values[0],
        Op::LessThan => v < values[0],
        Op::Between => v >= values[0] && v <= values[1],
        Op::In => values.contains(&v),
        Op::StartsWith => false,
    }
}

impl Compiled {
    pub fn matches(&self, d: &SimDeal) -> bool {
        match self {
            Compiled::And(a, b) => a.matches(d) && b.matches(d),
            Compiled::Or(a, b) => a.matches(d) || b.matches(d),
            Compiled::Text { field, op, values, exact } => {
                let mut scratch = String::new();
                let text = field.text(d, &mut scratch).to_lowercase();
                let eq = |v: &String| if *exact { text == *v } else { text.contains(v.as_str()) };
                match op {
                    Op::Equals => eq(&values[0]),
                    Op::NotEqual => !eq(&values[0]),
                    Op::StartsWith => text.starts_with(values[0].as_str()),
                    Op::In => values.contains(&text),
                    _ => false,
                }
            }
            Compiled::Time { field, op, values } => {
                let v = if *field == Field::CreatedTime { d.created } else { d.modified };
                ordered(*op, v, values)
            }
            Compiled::Date { op, values } => ordered(*op, d.closing, values),
            Compiled::Number { op, values } => match d.amount {
                Some(a) => ordered(*op, a, values),
                None => false,
            },
            Compiled::Id { op, values } => ordered(*op, d.id, values),
            Compiled::IsNull { field, negated } => {
                let null = match field {
                    Field::Amount => d.amount.is_none(),
                    _ => false,
                };
                null != *negated
            }
        }
    }

    /// The `[lo, hi]` range of `Modified_Time` (unix seconds, inclusive) every match must fall in, read from
    /// the conjunctions, so that the simulator only scans that slice of its time-sorted deals.
    pub fn modified_range(&self) -> (i64, i64) {
        match self {
            Compiled::And(a, b) => {
                let (a0, a1) = a.modified_range();
                let (b0, b1) = b.modified_range();
                (a0.max(b0), a1.min(b1))
            }
            Compiled::Time { field: Field::ModifiedTime, op, values } => match op {
                Op::GreaterEqual => (values[0], i64::MAX),
                Op::GreaterThan => (values[0].saturating_add(1), i64::MAX),
                Op::LessEqual => (i64::MIN, values[0]),
                Op::LessThan => (i64::MIN, values[0].saturating_sub(1)),
                Op::Between => (values[0], values[1]),
                Op::Equals => (values[0], values[0]),
                _ => (i64::MIN, i64::MAX),
            },
            _ => (i64::MIN, i64::MAX),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nested_groups_and_escapes() {
        let e = parse(r"((Last_Name:equals:Burns\,B)and(First_Name:starts_with:M))").unwrap();
        assert_eq!(
            e,
            Expr::cond("Last_Name", Op::Equals, &["Burns,B"]).and(Expr::cond("First_Name", Op::StartsWith, &["M"]))
        );
    }

    #[test]
    fn values_keep_colons_and_offsets() {
        let e = parse("(Modified_Time:between:2026-01-01T00:00:00+05:30,2026-01-02T00:00:00-03:00)").unwrap();
        let Expr::Cond(c) = e else { panic!() };
        assert_eq!(c.values, vec!["2026-01-01T00:00:00+05:30", "2026-01-02T00:00:00-03:00"]);
    }

    #[test]
    fn rejects_bad_operators_and_too_many_conditions() {
        assert_eq!(parse("(Stage:like:x)").unwrap_err().details["reason"], "invalid operator");
        let many = (0..16).map(|i| format!("(Stage:equals:{i})")).collect::<Vec<_>>();
        let mut s = many[0].clone();
        for c in &many[1..] {
            s = format!("({s}and{c})");
        }
        assert_eq!(parse(&s).unwrap_err().code, "CRITERIA_LIMIT_EXCEEDED");
        assert!(parse("((Stage:equals:a)and(Stage:equals:b)or(Stage:equals:c))").is_err());
    }

    #[test]
    fn a_datetime_field_refuses_a_date_that_is_not_one() {
        let e = parse("(Modified_Time:greater_equal:yesterday)").unwrap();
        assert_eq!(compile(&e, false).unwrap_err().details["expected_data_type"], "datetime");
    }
}
