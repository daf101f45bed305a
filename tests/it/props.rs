//! Property tests: arbitrary input never panics the codec or the op-script interpreter, and
//! every command the codec decodes is sent back byte for byte.

use proptest::prelude::*;
use streamsim_models::{opscript, wire};

fn op_line() -> impl Strategy<Value = String> {
    let op = prop_oneof![
        Just("preload"),
        Just("start"),
        Just("alloc"),
        Just("write"),
        Just("finish"),
        Just("abort"),
        Just("advance"),
        Just("replicate"),
        Just("observe"),
        Just("nope")
    ];
    let name = prop_oneof![Just("w1"), Just("w2"), Just("r1"), Just(""), Just("w\u{0}")];
    let number = prop_oneof![
        Just("1".to_owned()),
        Just("-3".to_owned()),
        Just("0".to_owned()),
        any::<i64>().prop_map(|n| n.to_string()),
        Just("1.5".to_owned()),
        Just("true".to_owned())
    ];
    (op, name.clone(), name, number.clone(), number, proptest::collection::vec(Just("w1"), 0..3))
        .prop_map(|(op, instance, writer, n, token, writers)| {
            format!(r#"{{"op":"{op}","instance":"{instance}","writer":"{writer}","from":"{instance}","handle":"h{n}","n":{n},"count":{n},"token":{token},"writers":{writers:?}}}"#)
        })
}

proptest! {
    #[test]
    fn decoding_any_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        for outcome in wire::decode_lines(&bytes) {
            let _ = outcome.to_json_line();
        }
    }

    #[test]
    fn decoding_near_commands_never_panics(name in "(RDATA|POSITION|USER_SYNC|USER_IP|LOCK_RELEASED|FEDERATION_ACK|PING)", rest in "[ -~\u{a0}-\u{3000}]{0,60}") {
        let line = format!("{name} {rest}");
        let _ = wire::decode_lines(line.as_bytes());
    }

    #[test]
    fn decoded_commands_encode_to_their_line(stream in "[a-z_]{1,8}", instance in "[a-z0-9]{1,6}", token in any::<i64>(), row in "[a-z ]{0,10}") {
        let line = format!("RDATA {stream} {instance} {token} [\"{row}\",{token}]");
        let command = wire::decode_line(line.as_bytes()).unwrap().unwrap();
        prop_assert_eq!(wire::encode_command(&command).unwrap(), format!("{line}\n").replace(", ", ",").into_bytes());
    }

    #[test]
    fn encoding_any_request_never_panics(text in "\\PC{0,200}") {
        let _ = wire::encode_lines(text.as_bytes());
    }

    #[test]
    fn op_scripts_of_arbitrary_lines_never_panic(lines in proptest::collection::vec(op_line(), 1..40), junk in proptest::collection::vec(any::<u8>(), 0..50)) {
        let mut script = lines.join("\n").into_bytes();
        script.push(b'\n');
        script.extend(junk);
        let non_blank = script.split(|&b| b == b'\n').filter(|l| std::str::from_utf8(l).map_or(true, |t| !t.trim().is_empty())).count();
        prop_assert_eq!(opscript::run_script(&script).len(), non_blank);
    }
}
