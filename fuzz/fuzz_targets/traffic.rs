//! The traffic file reader on arbitrary bytes.
//!
//! Checked: the reader ends in a record, a clean end, a torn tail or an
//! error, never a panic; it stops at the first error; and the records it
//! read, written again by `TrafficWriter`, are the bytes they were read from
//! (when their offsets never go backwards: the writer raises a later one
//! to the last).
#![no_main]

use harbour::traffic::{FILE_HEADER_SIZE, TrafficReader, TrafficWriter};
use libfuzzer_sys::fuzz_target;

/// Records read from one input: a bound on the time of one execution.
const RECORDS_MAX: usize = 256;

fuzz_target!(|data: &[u8]| {
    let Ok(mut reader) = TrafficReader::new(data) else {
        return;
    };
    let mut records = Vec::new();
    let mut failed = false;
    for _ in 0..RECORDS_MAX {
        match reader.next_record() {
            Ok(Some(r)) => records.push(r),
            Ok(None) => break,
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert_eq!(reader.records(), records.len() as u64);
    assert!(!(failed && reader.torn_tail), "an error is not a torn tail");
    let mut writer = TrafficWriter::new(Vec::new(), reader.created_unix_ms).expect("writes to memory");
    for r in &records {
        writer.write(r.offset_ns, r.kind, r.count, &r.body).expect("a record read is one that can be written");
    }
    let written = writer.finish().expect("writes to memory");
    assert_eq!(&written[8..16], &data[8..16], "the creation time");
    if records.windows(2).all(|w| w[0].offset_ns <= w[1].offset_ns) {
        assert_eq!(
            &written[FILE_HEADER_SIZE..],
            &data[FILE_HEADER_SIZE..written.len()],
            "records written again are the bytes read"
        );
    }
});
