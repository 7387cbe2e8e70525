//! Criteria escaping, checked against the simulator's independent parser after a real URL-encoding round trip.

use dealsync::zoho::criteria::{Expr, Op};
use dealsync_sim::criteria::{self as sim, parse};
use proptest::prelude::*;

fn encode_decode(criteria: &str) -> String {
    let encoded: String =
        url::form_urlencoded::Serializer::new(String::new()).append_pair("criteria", criteria).finish();
    url::form_urlencoded::parse(encoded.as_bytes()).next().unwrap().1.into_owned()
}

fn value() -> impl Strategy<Value = String> {
    // Any text, weighted towards the characters that need escaping or encoding.
    prop_oneof![
        "[()\\\\,:+&=%# a-zA-Z0-9]{1,24}",
        any::<String>().prop_filter("non-empty", |s| !s.is_empty()),
        Just("2026-01-01T00:00:00+05:30".to_string()),
        Just("\\".to_string()),
    ]
}

proptest! {
    #[test]
    fn any_value_survives_escaping_encoding_and_parsing(a in value(), b in value(), c in value()) {
        let e = Expr::cond("Deal_Name", Op::Equals, &a)
            .and(Expr::cond("Stage", Op::GreaterEqual, &b).and(Expr::cond("Deal_Name", Op::LessThan, &c)));
        let parsed = parse(&encode_decode(&e.to_string())).expect("the simulator parses what we send");
        let expected = sim::Expr::cond("Deal_Name", sim::Op::Equals, &[&a])
            .and(sim::Expr::cond("Stage", sim::Op::GreaterEqual, &[&b]).and(sim::Expr::cond("Deal_Name", sim::Op::LessThan, &[&c])));
        prop_assert_eq!(parsed, expected);
    }
}
