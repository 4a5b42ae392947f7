//! The pure part of a group's writes: merging in order, before anything is stored.

use super::*;

fn device() -> DeviceRecord {
    let mut d = DeviceRecord {
        id: "default/counter".into(),
        name: "counter".into(),
        state: "unknown".into(),
        ..DeviceRecord::default()
    };
    d.types.insert("status".into(), "string".into());
    d
}

fn reported(value: &str) -> Write {
    let twin =
        serde_json::from_value(json!({"status": {"actual": {"value": value}}})).expect("twins");
    Write::Twin {
        id: "default/counter".into(),
        update: TwinUpdate {
            twin,
            ..TwinUpdate::default()
        },
    }
}

#[test]
fn a_second_write_of_a_device_in_one_group_builds_on_the_first() {
    let first = stage(Some(&device()), &reported("1"), false).expect("first");
    let second = stage(Some(&first.record), &reported("2"), false).expect("second");
    assert_eq!(second.record.twins["status"].actual_value(), Some("2"));
    let Outcome::Twin(changes) = &second.outcome else {
        panic!("a twin write");
    };
    let (old, _) = &changes["status"];
    assert_eq!(old.as_ref().and_then(|t| t.actual_value()), Some("1"));
    let (msg, key) = second.report.expect("a report for the cloud");
    assert_eq!(key, "twin/edge_updated/default/counter");
    assert_eq!(
        msg.route.resource,
        "device/default/counter/twin/edge_updated"
    );
}

#[test]
fn the_same_value_again_is_not_reported() {
    let first = stage(Some(&device()), &reported("1"), false).expect("first");
    let again = stage(Some(&first.record), &reported("1"), false).expect("again");
    assert!(again.report.is_none());
}

#[test]
fn a_stock_cloudcore_is_sent_the_same_value_again() {
    let first = stage(Some(&device()), &reported("1"), true).expect("first");
    let again = stage(Some(&first.record), &reported("1"), true).expect("again");
    let (msg, _) = again.report.expect("reported again");
    assert_eq!(msg.content["twin"]["status"]["actual"]["value"], "1");
}

#[test]
fn an_unknown_device_and_a_wrong_state_are_refused() {
    assert!(matches!(
        stage(None, &reported("1"), false),
        Err(TwinError::UnknownDevice(id)) if id == "default/counter"
    ));
    assert!(matches!(state_of("sleepy"), Err(TwinError::BadRequest(_))));
    assert!(matches!(parse_state(b"{}"), Err(TwinError::BadRequest(_))));
    assert!(matches!(
        parse_state(b"not json"),
        Err(TwinError::BadRequest(_))
    ));
}

#[test]
fn a_device_online_records_when() {
    let w = Write::State {
        id: "default/counter".into(),
        state: state_of("ONLINE").expect("a state"),
    };
    let s = stage(Some(&device()), &w, false).expect("staged");
    assert_eq!(s.record.state, "online");
    assert!(!s.record.last_online.is_empty());
    assert!(s.report.is_some());
}
