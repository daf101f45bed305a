//! Unit tests of the codec against behaviour read from Synapse 1.163.2's commands.py.

use super::pyjson::PyValue;
use super::*;

fn decode_json(line: &[u8]) -> String {
    let outcome = match decode_line(line) {
        Ok(Some(command)) => DecodeOutcome::Command(command),
        Ok(None) => DecodeOutcome::Blank,
        Err(error) => DecodeOutcome::Error(error),
    };
    outcome.to_json_line()
}

fn kind(line: &[u8]) -> &'static str {
    decode_line(line)
        .expect_err("line should be rejected")
        .kind()
}

#[test]
fn rdata_row_may_contain_spaces_and_batch_token_is_null() {
    assert_eq!(
        decode_json(br#"RDATA events master batch ["$ev:x", {"a": 1.0}]"#),
        r#"{"command":"RDATA","fields":{"stream_name":"events","instance_name":"master","token":null,"row":["$ev:x",{"a":1.0}]}}"#
    );
    assert_eq!(
        decode_json(b"RDATA events w1 \xd9\xa3_0 {}"),
        r#"{"command":"RDATA","fields":{"stream_name":"events","instance_name":"w1","token":30,"row":{}}}"#
    );
}

#[test]
fn position_takes_python_ints() {
    assert_eq!(
        decode_json(b"POSITION events w1 +7 \t8 "),
        r#"{"command":"POSITION","fields":{"stream_name":"events","instance_name":"w1","prev_token":7,"new_token":8}}"#
    );
    assert_eq!(kind(b"POSITION events w1 7 8 9"), "ValueError");
    assert_eq!(kind(b"POSITION events w1 7"), "ValueError");
}

#[test]
fn blank_means_ascii_whitespace_only() {
    assert_eq!(decode_line(b"").unwrap(), None);
    assert_eq!(decode_line(b" \r\t\x0b\x0c").unwrap(), None);
    assert_eq!(kind(b"\xc2\xa0"), "KeyError");
}

#[test]
fn checks_run_in_synapse_order() {
    let mut long = b"PING ".to_vec();
    long.resize(LINE_BYTES_MAX + 1, b'\xff');
    assert_eq!(kind(&long), "Line length exceeded");
    long.truncate(LINE_BYTES_MAX);
    assert_eq!(kind(&long), "UnicodeDecodeError");
    assert_eq!(kind(b"ping 1"), "KeyError");
}

#[test]
fn simple_commands_keep_their_argument_raw() {
    assert_eq!(
        decode_json(b"PING"),
        r#"{"command":"PING","fields":{"data":""}}"#
    );
    assert_eq!(
        decode_json(b"ERROR a  b\r"),
        r#"{"command":"ERROR","fields":{"data":"a  b\r"}}"#
    );
    assert_eq!(
        decode_json(b"REPLICATE whatever"),
        r#"{"command":"REPLICATE","fields":{}}"#
    );
}

#[test]
fn user_ip_unpacks_any_iterable() {
    assert_eq!(
        decode_json(br#"USER_IP @u:x "abcde""#),
        r#"{"command":"USER_IP","fields":{"user_id":"@u:x","access_token":"a","ip":"b","user_agent":"c","device_id":"d","last_seen":"e"}}"#
    );
    assert_eq!(kind(b"USER_IP @u:x 5"), "TypeError");
    assert_eq!(kind(br#"USER_IP @u:x [1,2]"#), "ValueError");
    assert_eq!(kind(br#"LOCK_RELEASED [NaN, 1, 2]"#), "ValueError");
}

#[test]
fn user_sync_states_and_federation_ack_split() {
    assert_eq!(
        decode_json(b"USER_SYNC w1 @u:x None start 5"),
        r#"{"command":"USER_SYNC","fields":{"instance_id":"w1","user_id":"@u:x","device_id":null,"is_syncing":true,"last_sync_ms":5}}"#
    );
    assert_eq!(kind(b"USER_SYNC w1 @u:x D maybe 5"), "Exception");
    assert_eq!(kind(b"FEDERATION_ACK w1 5 6"), "ValueError");
}

#[test]
fn encoding_is_name_space_line_newline() {
    let bytes = encode_command(&Command::Replicate).unwrap();
    assert_eq!(bytes, b"REPLICATE \n");
    let rdata = Command::rdata(
        "events",
        "w1",
        None,
        PyValue::List(vec![PyValue::str("é"), PyValue::Float(1e16)]),
    );
    assert_eq!(
        encode_command(&rdata).unwrap(),
        b"RDATA events w1 batch [\"\\u00e9\",1e+16]\n"
    );
    let newline = Command::simple(CommandName::Error, "a\nb");
    assert_eq!(encode_command(&newline).unwrap_err().kind(), "Exception");
    let nan = Command::rdata("events", "w1", Some(3), PyValue::Float(f64::NAN));
    assert_eq!(encode_command(&nan).unwrap_err().kind(), "ValueError");
}

#[test]
fn encoding_limit_counts_bytes() {
    let fits = "é".repeat((LINE_BYTES_MAX - 5) / 2);
    assert!(encode_command(&Command::simple(CommandName::Ping, &fits)).is_ok());
    let too_long = format!("{fits}é");
    assert_eq!(
        encode_command(&Command::simple(CommandName::Ping, &too_long))
            .unwrap_err()
            .kind(),
        "Exception"
    );
}

#[test]
fn every_valid_command_roundtrips() {
    let lines: [&[u8]; 6] = [
        b"SERVER example.com",
        b"RDATA typing master 59 [\"!r:x\",[\"@a:x\"]]",
        b"POSITION events w1 7 9",
        b"USER_SYNC w1 @u:x DEV end 1700000000000",
        b"USER_IP @u:x [\"tok\",\"::1\",\"curl\",null,12]",
        b"LOCK_RELEASED [\"w1\",\"name\",\"key\"]",
    ];
    for line in lines {
        let command = decode_line(line).unwrap().unwrap();
        let mut expected = line.to_vec();
        expected.push(b'\n');
        assert_eq!(encode_command(&command).unwrap(), expected);
    }
}

#[test]
fn stream_split_keeps_carriage_returns() {
    let outcomes = decode_lines(b"PING 1\r\n\nNAME w1");
    assert_eq!(outcomes.len(), 3);
    assert_eq!(outcomes[1], DecodeOutcome::Blank);
    assert!(decode_lines(b"").is_empty());
    assert_eq!(decode_lines(b"\n"), vec![DecodeOutcome::Blank]);
}
