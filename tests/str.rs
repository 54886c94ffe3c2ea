//! The Suspicious Transaction Report: the XML validates against the
//! documented schema (`docs/str.xsd`, read by the small validator below for
//! the part of XML Schema it uses), lists exactly the month's cases, and the
//! CSV says the same; with several shards the switch merges them.

mod common;

use std::collections::HashMap;

use harbour::aml::report::{COLUMNS, FORMAT_CSV, FORMAT_XML, NAMESPACE};
use harbour::aml::{self, DAY_MS};
use harbour::clock::Clock;
use harbour::engine::book::REMITTANCE_OUT;
use harbour::engine::{Engine, EngineConfig};
use harbour::protocol::records::*;
use harbour::protocol::{ResultCode, kind};
use harbour::shard::{Switch, SwitchConfig};

const HKD: u16 = 344;
const XS: &str = "http://www.w3.org/2001/XMLSchema";

// ---- a validator for the part of XML Schema docs/str.xsd uses --------------

enum SimpleType {
    Enumeration(Vec<String>),
    List(String),
    /// A base type with facets: `maxInclusive`, `maxLength`, and the one
    /// pattern the schema uses, `[0-9]+` (any other fails the test).
    Restricted {
        base: String,
        max: Option<u64>,
        max_length: Option<usize>,
        digits: bool,
    },
}

struct Schema {
    types: HashMap<String, SimpleType>,
    /// `<case>`'s children: (name, type, optional).
    case: Vec<(String, String, bool)>,
    /// The root's attributes: (name, type, fixed value).
    attributes: Vec<(String, String, Option<String>)>,
}

fn schema() -> Schema {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/str.xsd")).unwrap();
    let doc = roxmltree::Document::parse(&text).expect("the schema is XML");
    let xs = |n: roxmltree::Node, name: &str| n.is_element() && n.tag_name() == (XS, name).into();
    let mut types = HashMap::new();
    let mut case = Vec::new();
    let mut attributes = Vec::new();
    for node in doc.root_element().children() {
        if xs(node, "simpleType") {
            let name = node.attribute("name").unwrap().to_string();
            let inner = node.children().find(|c| c.is_element()).unwrap();
            let t = if xs(inner, "list") {
                SimpleType::List(inner.attribute("itemType").unwrap().to_string())
            } else {
                let values: Vec<String> = inner
                    .children()
                    .filter(|c| xs(*c, "enumeration"))
                    .map(|c| c.attribute("value").unwrap().to_string())
                    .collect();
                let facet = |name| inner.children().find(|c| xs(*c, name)).map(|c| c.attribute("value").unwrap());
                if values.is_empty() {
                    let base = inner.attribute("base").unwrap().to_string();
                    let pattern = facet("pattern");
                    assert!(pattern.is_none_or(|p| p == "[0-9]+"), "a pattern the validator knows: {pattern:?}");
                    SimpleType::Restricted {
                        base,
                        max: facet("maxInclusive").map(|m| m.parse().unwrap()),
                        max_length: facet("maxLength").map(|m| m.parse().unwrap()),
                        digits: pattern.is_some(),
                    }
                } else {
                    SimpleType::Enumeration(values)
                }
            };
            types.insert(name, t);
        } else if xs(node, "complexType") && node.attribute("name") == Some("case") {
            for e in node.descendants().filter(|d| xs(*d, "element")) {
                let optional = e.attribute("minOccurs") == Some("0");
                case.push((e.attribute("name").unwrap().into(), e.attribute("type").unwrap().into(), optional));
            }
        } else if xs(node, "element") && node.attribute("name") == Some("str") {
            for a in node.descendants().filter(|d| xs(*d, "attribute")) {
                let fixed = a.attribute("fixed").map(String::from);
                attributes.push((a.attribute("name").unwrap().into(), a.attribute("type").unwrap().into(), fixed));
            }
        }
    }
    assert_eq!(case.len(), COLUMNS.len(), "the schema and the code list the same columns");
    Schema { types, case, attributes }
}

fn digits(v: &str) -> bool {
    !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit())
}

fn date_time(v: &str) -> bool {
    // The subset Harbour writes: YYYY-MM-DDThh:mm:ss.sssZ.
    let b = v.as_bytes();
    b.len() == 24
        && [4, 7].iter().all(|&i| b[i] == b'-')
        && b[10] == b'T'
        && [13, 16].iter().all(|&i| b[i] == b':')
        && b[19] == b'.'
        && b[23] == b'Z'
        && [0..4, 5..7, 8..10, 11..13, 14..16, 17..19, 20..23].into_iter().all(|r| digits(&v[r]))
}

impl Schema {
    fn valid(&self, type_name: &str, v: &str) -> bool {
        match type_name {
            // libxml2 (xmllint) takes at most 24 digits of these.
            "xs:nonNegativeInteger" => digits(v) && v.len() <= 24,
            "xs:positiveInteger" => digits(v) && !v.trim_start_matches('0').is_empty(),
            "xs:unsignedLong" => v.parse::<u64>().is_ok() && digits(v),
            "xs:unsignedShort" => v.parse::<u16>().is_ok() && digits(v),
            "xs:decimal" => {
                let v = v.strip_prefix('-').unwrap_or(v);
                let well_formed = match v.split_once('.') {
                    Some((w, f)) => digits(w) && digits(f),
                    None => digits(v),
                };
                well_formed && v.bytes().filter(u8::is_ascii_digit).count() <= 24
            }
            "xs:dateTime" => date_time(v),
            "xs:gYearMonth" => v.len() == 7 && digits(&v[..4]) && &v[4..5] == "-" && digits(&v[5..]),
            "xs:string" => true,
            "xs:token" => v.trim() == v && !v.contains("  "),
            other => match self.types.get(other).unwrap_or_else(|| panic!("type {other} in the schema")) {
                SimpleType::Enumeration(values) => values.iter().any(|x| x == v),
                SimpleType::List(item) => v.split_whitespace().all(|x| self.valid(item, x)),
                SimpleType::Restricted { base, max, max_length, digits: only_digits } => {
                    self.valid(base, v)
                        && max.is_none_or(|m| v.parse::<u64>().is_ok_and(|x| x <= m))
                        && max_length.is_none_or(|n| v.chars().count() <= n)
                        && (!only_digits || digits(v))
                }
            },
        }
    }

    /// Validates a report; returns each case's values by column.
    fn validate(&self, xml: &str) -> Vec<Vec<String>> {
        let doc = roxmltree::Document::parse(xml).expect("the report is well-formed XML");
        let root = doc.root_element();
        assert_eq!(root.tag_name(), (NAMESPACE, "str").into(), "root element and namespace");
        for (name, t, fixed) in &self.attributes {
            let v = root.attribute(name.as_str()).unwrap_or_else(|| panic!("attribute {name}"));
            assert!(self.valid(t, v), "attribute {name}={v:?} is not a {t}");
            if let Some(f) = fixed {
                assert_eq!(v, f, "attribute {name} is fixed");
            }
        }
        assert_eq!(root.attributes().count(), self.attributes.len(), "no undeclared attributes");
        let mut cases = Vec::new();
        for case in root.children().filter(|c| c.is_element()) {
            assert_eq!(case.tag_name(), (NAMESPACE, "case").into());
            let mut children = case.children().filter(|c| c.is_element()).peekable();
            let mut values = Vec::new();
            for (name, t, optional) in &self.case {
                match children.peek() {
                    Some(c) if c.tag_name() == (NAMESPACE, name.as_str()).into() => {
                        let v = c.text().unwrap_or("");
                        assert!(self.valid(t, v), "<{name}>{v}</{name}> is not a {t}");
                        values.push(v.to_string());
                        children.next();
                    }
                    _ if *optional => values.push(String::new()),
                    other => panic!("expected <{name}>, found {:?}", other.map(|c| c.tag_name().name())),
                }
            }
            assert!(children.next().is_none(), "no undeclared elements in a case");
            cases.push(values);
        }
        assert_eq!(root.attribute("cases").unwrap(), cases.len().to_string());
        cases
    }
}

// ---- the reports ---------------------------------------------------------------

/// Hong Kong midnight starting 2026-11-01, as UTC ms (2026-10-31T16:00Z).
fn november() -> u64 {
    aml::hk_month_start_ms(2026, 11)
}

fn report(e: &mut Engine, year: u16, month: u8, format: u8) -> (StrHeader, String) {
    let mut out = Vec::new();
    let now = e.now_ms();
    e.apply(kind::EXPORT_STR, &encode_all(&[StrRequest { year, month, format }]), now, &mut out).unwrap();
    let header = StrHeader::decode(&out[..StrHeader::SIZE]);
    assert_eq!(header.report_len as usize, out.len() - StrHeader::SIZE);
    (header, String::from_utf8(out[StrHeader::SIZE..].to_vec()).unwrap())
}

fn submit_at(e: &mut Engine, time: u64, t: Transfer) -> TransferResult {
    let mut out = Vec::new();
    e.apply(kind::SUBMIT_TRANSFERS, &encode_all(&[t]), time, &mut out).unwrap();
    TransferResult::decode(&out)
}

fn remit(id: u128, from: u64, amount: u64, country: u16) -> Transfer {
    Transfer { destination_country: country, ..common::transfer(id, from, REMITTANCE_OUT, amount, HKD) }
}

/// Cases on both sides of November's edges, with every outcome.
fn engine_with_cases() -> Engine {
    let start = november() - 2 * DAY_MS;
    let mut e = Engine::new(EngineConfig { manual_clock: true, ..EngineConfig::default() }, start);
    for id in [1024, 1025] {
        assert_eq!(e.create_account(&Account { customer_ref: id * 10, ..common::account(id) }).code, 0);
        assert_eq!(submit_at(&mut e, start, common::deposit(u128::from(id), id, 100_000_000, HKD)).code, 0);
    }
    let held = |r: TransferResult| assert_eq!(r.state, STATE_PENDING, "{r:?}");
    let step = |e: &mut Engine, id, method, outcome| {
        let mut out = Vec::new();
        let now = e.now_ms();
        e.apply(kind::CONFIRM_STEP_UP, &encode_all(&[StepUp { transfer_id: id, method, outcome }]), now, &mut out)
            .unwrap();
    };
    let hour = 3_600_000;
    held(submit_at(&mut e, november() - 1, remit(10, 1024, 100, 408))); // October's last ms: expires
    held(submit_at(&mut e, november(), remit(11, 1024, 200, 364))); // November's first ms
    step(&mut e, 11, METHOD_SMS_OTP, OUTCOME_PASS); // passed
    held(submit_at(&mut e, november() + hour, remit(12, 1025, 8_000_001, 104))); // FACE + SMS: expires
    held(submit_at(&mut e, november() + 2 * hour, remit(13, 1025, 100, 408)));
    step(&mut e, 13, METHOD_SMS_OTP, OUTCOME_FAIL); // failed
    held(submit_at(&mut e, november() + 2 * hour, remit(14, 1024, 100, 408)));
    let mut out = Vec::new();
    let now = e.now_ms();
    e.apply(kind::CANCEL_TRANSFERS, &encode_all(&[Id { id: 14 }]), now, &mut out).unwrap(); // cancelled
    let december = aml::hk_month_start_ms(2026, 12);
    held(submit_at(&mut e, december - 5 * 60_000, remit(15, 1024, 100, 408))); // still pending
    held(submit_at(&mut e, december, remit(16, 1024, 100, 408))); // December's
    e
}

#[test]
fn the_xml_report_validates_and_lists_exactly_the_months_cases() {
    let schema = schema();
    let mut e = engine_with_cases();
    let (header, xml) = report(&mut e, 2026, 11, FORMAT_XML);
    assert_eq!((header.code, header.format), (0, FORMAT_XML));
    let cases = schema.validate(&xml);
    let col = |name: &str| COLUMNS.iter().position(|c| *c == name).unwrap();
    let ids: Vec<&str> = cases.iter().map(|c| c[col("transfer_id")].as_str()).collect();
    assert_eq!(ids, ["11", "12", "13", "14", "15"], "November's, in submission order");
    let outcomes: Vec<&str> = cases.iter().map(|c| c[col("outcome")].as_str()).collect();
    assert_eq!(outcomes, ["passed", "expired", "failed", "cancelled", "pending"]);
    let twelve = &cases[1];
    assert_eq!(twelve[col("account")], "1025");
    assert_eq!(twelve[col("customer_ref")], "10250");
    assert_eq!(twelve[col("counterparty")], "3");
    assert_eq!(twelve[col("destination_country")], "104");
    assert_eq!((twelve[col("debit_amount")].as_str(), twelve[col("debit_currency")].as_str()), ("80000.01", "HKD"));
    assert_eq!(twelve[col("hkd_value")], "80000.01");
    assert_eq!(twelve[col("levels")], "1 2");
    assert_eq!(twelve[col("rules")], "DAILY_LIMIT HIGH_RISK_COUNTRY");
    assert_eq!(twelve[col("holds")], "FACE_REVIEW SMS_OTP");
    assert_eq!(twelve[col("submitted_at")], "2026-10-31T17:00:00.000Z");
    assert_eq!(twelve[col("closed_at")], "2026-10-31T17:10:00.000Z", "when its window closed");
    assert_eq!(cases[4][col("closed_at")], "", "a pending case has no closed_at");
    // October and December hold the cases on either side.
    let october = schema.validate(&report(&mut e, 2026, 10, FORMAT_XML).1);
    assert_eq!(october.len(), 1);
    assert_eq!(october[0][0], "10");
    assert_eq!(schema.validate(&report(&mut e, 2026, 12, FORMAT_XML).1)[0][0], "16");
}

#[test]
fn the_csv_report_matches_the_xml() {
    let schema = schema();
    let mut e = engine_with_cases();
    let xml_cases = schema.validate(&report(&mut e, 2026, 11, FORMAT_XML).1);
    let (header, csv) = report(&mut e, 2026, 11, FORMAT_CSV);
    assert_eq!((header.code, header.format), (0, FORMAT_CSV));
    let mut lines = csv.split("\r\n");
    assert_eq!(lines.next().unwrap(), COLUMNS.join(","));
    let rows: Vec<Vec<String>> =
        lines.filter(|l| !l.is_empty()).map(|l| l.split(',').map(String::from).collect()).collect();
    assert_eq!(rows, xml_cases, "the same cases, fields and order");
    assert!(csv.ends_with("\r\n"));
}

#[test]
fn months_without_cases_and_bad_months() {
    let mut e = engine_with_cases();
    let (header, body) = report(&mut e, 2026, 9, FORMAT_XML);
    assert_eq!((header.code, header.report_len, body.as_str()), (ResultCode::NothingToReport.as_u16(), 0, ""));
    for month in [0, 13] {
        let (header, _) = report(&mut e, 2026, month, FORMAT_CSV);
        assert_eq!((header.code, header.report_len), (ResultCode::InvalidField.as_u16(), 0), "month {month}");
    }
    let (header, _) = report(&mut e, 2026, 11, 3);
    assert_eq!(header.code, ResultCode::InvalidField.as_u16(), "an unknown format from a library caller");
}

#[test]
fn several_shards_make_one_report() {
    let schema = schema();
    let config = SwitchConfig { shards: 3, clock: Clock::Manual, ..SwitchConfig::default() };
    let storages: Vec<std::sync::Arc<dyn harbour::wal::storage::Storage>> =
        (0..3).map(|_| std::sync::Arc::new(harbour::wal::storage::MemStorage::new()) as _).collect();
    let s = Switch::open(config, storages).unwrap();
    let accounts: Vec<Account> = (1024..1034).map(common::account).collect();
    s.submit(kind::CREATE_ACCOUNTS, &encode_all(&accounts)).unwrap();
    let mut transfers: Vec<Transfer> = (1024..1034).map(|a| common::deposit(u128::from(a), a, 1_000, HKD)).collect();
    transfers.extend((1024..1034u64).map(|a| remit(u128::from(a) * 10, a, 100, 408)));
    let answers: Vec<TransferResult> =
        decode_all(&s.submit(kind::SUBMIT_TRANSFERS, &encode_all(&transfers)).unwrap()).collect();
    assert!(answers[10..].iter().all(|r| r.state == STATE_PENDING && r.holds == 2));
    let answer = s.submit(kind::EXPORT_STR, &encode_all(&[StrRequest { year: 2026, month: 1, format: 1 }])).unwrap();
    let header = StrHeader::decode(&answer[..StrHeader::SIZE]);
    assert_eq!(header.code, 0);
    let cases = schema.validate(std::str::from_utf8(&answer[StrHeader::SIZE..]).unwrap());
    let ids: Vec<u64> = cases.iter().map(|c| c[0].parse().unwrap()).collect();
    assert_eq!(ids, (1024..1034u64).map(|a| a * 10).collect::<Vec<_>>(), "every shard's cases, in order");
    let empty = s.submit(kind::EXPORT_STR, &encode_all(&[StrRequest { year: 2026, month: 2, format: 2 }])).unwrap();
    assert_eq!(StrHeader::decode(&empty).code, ResultCode::NothingToReport.as_u16());
    // Pages, every case in the same millisecond on a manual clock: each
    // shard gives its next few, the switch merges them in order.
    let ask = |r: StrPageRequest| {
        let answer = s.submit(kind::EXPORT_STR_PAGE, &encode_all(&[r])).unwrap();
        (StrPageHeader::decode(&answer[..StrPageHeader::SIZE]), answer[StrPageHeader::SIZE..].to_vec())
    };
    for limit in [1, 3, 4, 10] {
        let (pages, headers) = all_pages(ask, 2026, 1, FORMAT_XML, limit);
        assert_eq!(pages, answer[StrHeader::SIZE..], "{limit} a page");
        assert!(headers.iter().all(|h| h.cases == 10), "{headers:?}");
    }
}

// ---- pages (EXPORT_STR_PAGE) ---------------------------------------------------

/// Asks one page of a library engine.
fn page(e: &mut Engine, request: StrPageRequest) -> (StrPageHeader, Vec<u8>) {
    let mut out = Vec::new();
    let now = e.now_ms();
    e.apply(kind::EXPORT_STR_PAGE, &encode_all(&[request]), now, &mut out).unwrap();
    let header = StrPageHeader::decode(&out[..StrPageHeader::SIZE]);
    assert_eq!(header.report_len as usize, out.len() - StrPageHeader::SIZE);
    (header, out[StrPageHeader::SIZE..].to_vec())
}

/// Asks every page in turn, `ask` answering one page request; the report
/// they make and each page's header.
fn all_pages(
    mut ask: impl FnMut(StrPageRequest) -> (StrPageHeader, Vec<u8>),
    year: u16,
    month: u8,
    format: u8,
    limit: u32,
) -> (Vec<u8>, Vec<StrPageHeader>) {
    let mut request = StrPageRequest { year, month, format, limit, ..StrPageRequest::default() };
    let (mut report, mut headers) = (Vec::new(), Vec::new());
    loop {
        let (header, bytes) = ask(request);
        assert_eq!(header.code, 0, "{header:?}");
        assert!(header.rows <= limit, "{header:?}");
        report.extend_from_slice(&bytes);
        headers.push(header);
        if header.last() {
            return (report, headers);
        }
        assert!(headers.len() < 1_000, "pages never end");
        request.as_of_ms = header.as_of_ms;
        (request.after_ms, request.after_id) = (header.next_after_ms, header.next_after_id);
    }
}

#[test]
fn pages_in_order_are_the_report() {
    let mut e = engine_with_cases();
    let now = e.now_ms();
    for format in [FORMAT_XML, FORMAT_CSV] {
        let whole = report(&mut e, 2026, 11, format).1;
        for limit in [1, 2, 3, 5, 100] {
            let (pages, headers) = all_pages(|r| page(&mut e, r), 2026, 11, format, limit);
            assert_eq!(String::from_utf8(pages).unwrap(), whole, "format {format}, {limit} a page");
            assert_eq!(headers.len(), 5usize.div_ceil(limit as usize).max(1), "limit {limit}");
            assert!(headers.iter().all(|h| h.cases == 5 && h.as_of_ms == now && h.format == format));
            assert_eq!(headers.iter().map(|h| h.rows).sum::<u32>(), 5);
            assert_eq!(headers.iter().filter(|h| h.last()).count(), 1, "only the last page is LAST");
        }
    }
    let (pages, _) = all_pages(|r| page(&mut e, r), 2026, 11, FORMAT_XML, 2);
    assert_eq!(schema().validate(std::str::from_utf8(&pages).unwrap()).len(), 5);
}

#[test]
fn pages_are_as_of_the_first_and_bad_page_requests_are_refused() {
    let mut e = engine_with_cases();
    let december = aml::hk_month_start_ms(2026, 12);
    assert_eq!(submit_at(&mut e, december + 10, remit(17, 1025, 100, 408)).state, STATE_PENDING);
    let first = StrPageRequest { year: 2026, month: 12, format: FORMAT_XML, limit: 1, ..StrPageRequest::default() };
    let (one, text) = page(&mut e, first);
    assert_eq!((one.code, one.cases, one.rows, one.last()), (0, 2, 1, false), "{one:?}");
    assert!(String::from_utf8(text).unwrap().contains("cases=\"2\""));
    // A case submitted after the first page is not in this report.
    assert_eq!(submit_at(&mut e, december + 20, remit(18, 1025, 100, 408)).state, STATE_PENDING);
    let next = StrPageRequest {
        as_of_ms: one.as_of_ms,
        after_ms: one.next_after_ms,
        after_id: one.next_after_id,
        limit: 5,
        ..first
    };
    let (two, text) = page(&mut e, next);
    assert_eq!((two.code, two.cases, two.rows, two.last()), (0, 2, 1, true), "{two:?}");
    let text = String::from_utf8(text).unwrap();
    assert!(text.contains("<transfer_id>17</transfer_id>") && !text.contains(">18<") && text.ends_with("</str>\n"));
    // A time to come is read as now.
    let (later, _) = page(&mut e, StrPageRequest { as_of_ms: u64::MAX, ..first });
    assert_eq!((later.as_of_ms, later.cases), (e.now_ms(), 3));
    // Bad requests change nothing and say why.
    let invalid = ResultCode::InvalidField.as_u16();
    for bad in [
        StrPageRequest { limit: 0, ..first },
        StrPageRequest { limit: STR_PAGE_LIMIT_MAX + 1, ..first },
        StrPageRequest { month: 13, ..first },
        StrPageRequest { month: 0, ..first },
        StrPageRequest { format: 3, ..first },
    ] {
        let (header, bytes) = page(&mut e, bad);
        assert_eq!((header.code, header.report_len, header.last()), (invalid, 0, false), "{bad:?}");
        assert!(bytes.is_empty());
    }
    let (empty, _) = page(&mut e, StrPageRequest { month: 9, ..first });
    assert_eq!((empty.code, empty.report_len), (ResultCode::NothingToReport.as_u16(), 0));
    // A month that ends after the first page's time holds no later case.
    let (before, _) = page(&mut e, StrPageRequest { as_of_ms: december + 15, ..first });
    assert_eq!(before.cases, 2, "16 and 17, not 18");
}

/// What xmllint (libxml2) says of a report against the schema, where it is
/// installed (it is not on CI machines; the validator above is).
fn xmllint(xml: &str) -> Option<String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("str.xml");
    std::fs::write(&path, xml).unwrap();
    let schema = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/str.xsd");
    let out = std::process::Command::new("xmllint")
        .args(["--noout", "--stream", "--schema", schema])
        .arg(&path)
        .output()
        .ok()?;
    Some(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
        .filter(|_| !out.status.success())
        .or(Some(String::new()))
}

#[test]
fn transfer_ids_of_every_size_validate() {
    let mut e = engine_with_cases();
    let december = aml::hk_month_start_ms(2026, 12);
    for id in [u128::MAX, u128::from(u64::MAX) * 1_000_000] {
        assert_eq!(submit_at(&mut e, december + 1, remit(id, 1025, 100, 408)).state, STATE_PENDING);
    }
    let (header, xml) = report(&mut e, 2026, 12, FORMAT_XML);
    assert_eq!(header.code, 0);
    let cases = schema().validate(&xml);
    assert_eq!(cases.iter().map(|c| c[0].len()).max(), Some(39), "u128::MAX has 39 digits");
    if let Some(errors) = xmllint(&xml) {
        assert_eq!(errors, "", "xmllint validates it too");
    }
}
